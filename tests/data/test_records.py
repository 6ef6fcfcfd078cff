"""Prompt records: the real GRLO set parses; malformed records fail naming file, line and key."""

import json
import re
import sys
import types

import numpy as np
import pytest

from grlo_jax import data

GOOD = {"data_source": "src", "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
        "ability": "math", "reward_model": {"style": "rule", "ground_truth": "4"},
        "extra_info": {"index": 7}}


def write_jsonl(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return path


def test_real_grlo_prompts_parse(shared_data):
  recs = data.read_records(shared_data / "grlo_train_prompts.jsonl")
  assert len(recs) == 1000
  assert [r.index for r in recs] == list(range(1000))
  assert {r.style for r in recs} == {"model"}
  assert all(r.messages and r.messages[-1]["role"] == "user" and r.messages[-1]["content"]
             for r in recs)
  assert recs[0].data_source == "lighteval/MATH" and recs[0].extra_info == {"split": "train", "index": 0}


def test_shipped_tiny_prompts_parse():
  recs = data.read_records(data.TINY_PROMPTS)
  assert 48 <= len(recs) <= 96
  rule = [r for r in recs if r.style == "rule"]
  assert len(rule) >= len(recs) // 4 and all(r.ground_truth for r in rule)
  assert all("\\boxed{}" in r.messages[-1]["content"] for r in rule)
  assert any(r.style == "model" for r in recs)
  assert all(r.ground_truth.lstrip("-").isdigit() for r in rule)


def test_blank_lines_skipped_and_indices_run_across_files(tmp_path):
  a = write_jsonl(tmp_path / "a.jsonl", ["", json.dumps(GOOD), "   ", json.dumps(GOOD)])
  b = write_jsonl(tmp_path / "b.jsonl", [json.dumps(GOOD | {"data_source": "b"})])
  recs = data.read_records([a, b])
  assert [r.index for r in recs] == [0, 1, 2]
  assert [r.data_source for r in recs] == ["src", "src", "b"]
  assert recs[0].ground_truth == "4"
  assert recs[0].messages == ({"role": "user", "content": "What is 2 + 2?"},)
  assert [r.index for r in data.read_records(f"{a},{b}")] == [0, 1, 2]


def test_model_style_defaults():
  rec = data.records.parse_record(
      {"data_source": "s", "prompt": [{"role": "user", "content": "hi"}],
       "reward_model": {"style": "model"}}, index=0, where="x")
  assert (rec.ground_truth, rec.ability, rec.extra_info) == ("", "", {})
  rec = data.records.parse_record(GOOD | {"reward_model": {"style": "rule", "ground_truth": 42}},
                                  index=0, where="x")
  assert rec.ground_truth == "42"


def _without(d, *path):
  d = json.loads(json.dumps(d))
  inner = d
  for key in path[:-1]:
    inner = inner[key]
  del inner[path[-1]]
  return d


@pytest.mark.parametrize("bad, key", [
    (_without(GOOD, "prompt"), "'prompt'"),
    (_without(GOOD, "data_source"), "'data_source'"),
    (_without(GOOD, "reward_model", "style"), "'reward_model.style'"),
    (_without(GOOD, "reward_model", "ground_truth"), "'reward_model.ground_truth'"),
    (_without(GOOD, "prompt", 0, "content"), "'prompt[0].content'"),
    (GOOD | {"prompt": [{"role": "user", "content": 3}]}, "'prompt[0].content'"),
    (GOOD | {"prompt": [{"role": "robot", "content": "x"}]}, "'prompt[0].role'"),
    (GOOD | {"prompt": []}, "'prompt'"),
    (GOOD | {"prompt": "hello"}, "'prompt'"),
    (GOOD | {"reward_model": {"style": "judge", "ground_truth": ""}}, "'reward_model.style'"),
    (GOOD | {"reward_model": {"style": "rule", "ground_truth": True}}, "'reward_model.ground_truth'"),
    (GOOD | {"extra_info": [1]}, "'extra_info'"),
    (GOOD | {"ability": 1}, "'ability'"),
])
def test_bad_record_names_file_line_and_key(tmp_path, bad, key):
  path = write_jsonl(tmp_path / "p.jsonl", [json.dumps(GOOD), "", json.dumps(bad)])
  with pytest.raises(data.RecordError, match=re.escape(f"p.jsonl:3: key {key}")) as e:
    data.read_records(path)
  assert str(path) in str(e.value)


def test_bad_json_names_file_and_line(tmp_path):
  path = write_jsonl(tmp_path / "p.jsonl", [json.dumps(GOOD), '{"data_source": "x", "prompt": ['])
  with pytest.raises(data.RecordError, match=r"p\.jsonl:2: invalid JSON"):
    data.read_records(path)
  path = write_jsonl(tmp_path / "q.jsonl", ["[1, 2]"])
  with pytest.raises(data.RecordError, match=r"q\.jsonl:1: expected a JSON object"):
    data.read_records(path)


def test_unknown_suffix(tmp_path):
  with pytest.raises(ValueError, match="unknown prompt file type"):
    data.read_records(tmp_path / "p.csv")


def test_parquet_matches_jsonl(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  rows = [json.loads(line) for line in data.TINY_PROMPTS.read_text().splitlines() if line.strip()]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
  assert data.read_records(tmp_path / "p.parquet") == data.read_records(data.TINY_PROMPTS)
  # Parquet unifies schemas: a key one record lacks reads back as null in the others.
  model_style = GOOD | {"reward_model": {"style": "model"}, "ability": None, "extra_info": None}
  pq.write_table(pa.Table.from_pylist([GOOD, model_style]), tmp_path / "mixed.parquet")
  got = data.read_records(tmp_path / "mixed.parquet")
  assert [(r.style, r.ground_truth, r.ability) for r in got] == [("rule", "4", "math"), ("model", "", "")]
  no_style = _without(GOOD, "reward_model", "style")
  pq.write_table(pa.Table.from_pylist([GOOD, no_style]), tmp_path / "bad.parquet")
  with pytest.raises(data.RecordError,
                     match=r"bad\.parquet row 1: key 'reward_model.style': missing \(null\)"):
    data.read_records(tmp_path / "bad.parquet")


def test_tfds_source_through_data_source(monkeypatch):
  # TFDS yields bytes, numpy scalars, and a Sequence-of-dict prompt as a dict of columns.
  example = {"data_source": np.bytes_(b"tfds_src"), "ability": b"math",
             "prompt": {"role": np.array([b"system", b"user"]),
                        "content": np.array([b"Be brief.", b"1+1?"])},
             "reward_model": {"style": b"rule", "ground_truth": b"2"}, "extra_info": {"index": np.int64(3)}}
  calls = []

  def data_source(name, split, data_dir=None):
    calls.append((name, split, data_dir))
    return [example, example]

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source))
  recs = data.read_tfds("my_prompts", split="train", data_dir="/d")
  assert calls == [("my_prompts", "train", "/d")]
  assert [r.index for r in recs] == [0, 1]
  assert recs[0].messages == ({"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "1+1?"})
  assert (recs[0].data_source, recs[0].style, recs[0].ground_truth) == ("tfds_src", "rule", "2")
  assert recs[0].extra_info == {"index": 3}
  custom = data.read_tfds("x", split="test", to_record=lambda ex: GOOD)
  assert custom[1].ground_truth == "4"
