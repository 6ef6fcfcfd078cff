"""grade_predictions: graded report from a JSONL of completions; bad input names file and line."""

import json

import pytest

from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import predictions
from grlo_jax.eval import report


def _write(path, lines):
  path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines),
                  encoding="utf-8")
  return path


@pytest.mark.parametrize("bad_line, message", [
    ('{"benchmark": "math500", "id": "x"', "invalid JSON"),
    ({"benchmark": "math500", "id": "test/algebra/1.json"}, "missing key 'completion'"),
    ({"id": "1", "completion": "x"}, "missing key 'benchmark'"),
    ({"benchmark": "math500", "completion": "x"}, "missing key 'id'"),
    ({"benchmark": "nope", "id": "1", "completion": "x"}, "unknown benchmark 'nope'"),
    ({"benchmark": "math500", "id": "1", "completion": 3}, "'completion' must be a string"),
    ('["a list"]', "expected a JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path, bad_line, message):
  good = {"benchmark": "aime25", "id": "0", "completion": "\\boxed{70}"}
  path = _write(tmp_path / "preds.jsonl", [good, "", bad_line])
  with pytest.raises(ValueError) as e:
    predictions.read_predictions(path)
  assert str(e.value).startswith(f"{path}:3: ")
  assert message in str(e.value)


def test_unknown_id_names_file_and_line(tmp_path, shared_data):
  path = _write(tmp_path / "preds.jsonl", [
      {"benchmark": "aime25", "id": "0", "completion": "\\boxed{70}"},
      {"benchmark": "aime25", "id": "999", "completion": "\\boxed{1}"}])
  with pytest.raises(ValueError, match=rf"^{path}:2: aime25 has no item with id '999'"):
    predictions.grade_predictions(path, shared_data)


def test_alpaca_needs_a_scorer(tmp_path, shared_data):
  path = _write(tmp_path / "preds.jsonl",
                [{"benchmark": "alpaca_eval", "id": 0, "completion": "hi"}])
  with pytest.raises(ValueError, match=rf"^{path}:1: alpaca_eval needs a scoring function"):
    predictions.grade_predictions(path, shared_data)
  graded = predictions.grade_predictions(path, shared_data, score=lambda p, r: -len(r))
  assert graded["benchmarks"]["alpaca_eval"]["win_rate"] == 1.0


def test_grades_math_and_code_with_samples_and_writes_reports(tmp_path, shared_data):
  aime = bm.load("aime25", shared_data)[:2]
  he = bm.load("humaneval", shared_data)[:2]
  lines = [
      {"benchmark": "aime25", "id": aime[0].id, "completion": f"so \\boxed{{{aime[0].answer}}}"},
      {"benchmark": "aime25", "id": aime[1].id, "completion": "so \\boxed{1}"},
      {"benchmark": "humaneval", "id": he[0].id, "completion": he[0].tests["canonical_solution"]},
      {"benchmark": "humaneval", "id": he[0].id, "completion": "    return None\n"},
      {"benchmark": "humaneval", "id": he[1].id, "completion": he[1].tests["canonical_solution"]},
      {"benchmark": "humaneval", "id": he[1].id, "completion": he[1].tests["canonical_solution"]},
  ]
  path = _write(tmp_path / "preds.jsonl", lines)
  graded = predictions.grade_predictions(path, shared_data / "eval")
  assert graded["benchmarks"]["aime25"] == {"accuracy": 0.5, "n": 2, "samples": 2, "pass@1": 0.5,
                                           "missing": 28}
  he_summary = graded["benchmarks"]["humaneval"]
  assert he_summary["accuracy"] == 0.75 and he_summary["pass@2"] == 1.0 and he_summary["n"] == 2
  records = {(r["benchmark"], r["id"]): r for r in graded["items"]}
  assert records[("aime25", aime[1].id)] == {"benchmark": "aime25", "id": aime[1].id,
                                             "correct": [False], "extracted": ["1"]}
  assert records[("humaneval", he[0].id)]["extracted"] == ["passed", "failed"]

  only = predictions.grade_predictions(path, shared_data, benchmarks=["aime25"])
  assert list(only["benchmarks"]) == ["aime25"]
  with pytest.raises(ValueError, match="no predictions for math500"):
    predictions.grade_predictions(path, shared_data, benchmarks=["math500"])

  report.write(graded, tmp_path / "out" / "eval.json", tmp_path / "eval.md")
  assert json.loads((tmp_path / "out" / "eval.json").read_text())["benchmarks"]["aime25"]["n"] == 2
  table = (tmp_path / "eval.md").read_text()
  assert table.splitlines()[0].startswith("| benchmark | accuracy | pass@1 | pass@2 |")
  assert "| aime25 | 50.0 | 50.0 |  |" in table
