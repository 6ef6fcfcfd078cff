"""launch/evaluate.py end to end: grading given completions, and sampling from a tiny model.

GPQA's questions must stay out of output: checks on them compare booleans, never text.
"""

import json
import pathlib
import subprocess
import sys

from grlo_jax.eval import benchmarks as bm
from tests.eval.test_runner import save_tiny_qwen3

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _evaluate(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(ROOT / "launch" / "evaluate.py"), *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


def test_predictions_are_graded_and_reported(tmp_path, shared_data):
  math = bm.load("math500", shared_data)[:20]
  aime = bm.load("aime24", shared_data)[:5]
  he = bm.load("humaneval", shared_data)[:1]
  gpqa = bm.load("gpqa_diamond", shared_data)[:2]
  preds = _write_jsonl(tmp_path / "preds.jsonl", [
      *({"benchmark": "math500", "id": i.id,
         "completion": f"... the answer is $\\boxed{{{i.answer}}}$"} for i in math),
      *({"benchmark": "aime24", "id": i.id, "completion": f"\\boxed{{{int(i.answer) + 1}}}"}
        for i in aime),
      {"benchmark": "humaneval", "id": he[0].id, "completion": he[0].tests["canonical_solution"]},
      *({"benchmark": "gpqa_diamond", "id": i.id, "completion": f"Answer: {i.answer}"} for i in gpqa),
  ])
  out = tmp_path / "res" / "eval.json"
  run = _evaluate(f"--predictions={preds}", "--benchmarks=math500,aime24,humaneval,gpqa_diamond",
                  f"--data_dir={shared_data / 'eval'}", f"--output={out}")
  assert run.returncode == 0, run.stderr[-3000:]

  result = json.loads(out.read_text())
  assert list(result) == ["benchmarks"]
  got = result["benchmarks"]
  assert list(got) == ["math500", "aime24", "humaneval", "gpqa_diamond"]
  assert got["math500"]["accuracy"] == 1.0 and got["math500"]["n"] == 20
  assert got["aime24"]["accuracy"] == 0.0 and got["aime24"]["n"] == 5
  assert got["humaneval"]["accuracy"] == 1.0 and got["humaneval"]["n"] == 1
  assert got["gpqa_diamond"]["accuracy"] == 1.0 and got["gpqa_diamond"]["n"] == 2
  assert got["math500"]["pass@1"] == 1.0 and "pass@2" not in got["math500"]

  table = out.with_suffix(".md").read_text()
  assert "| math500 | 100.0 |" in table and "| aime24 | 0.0 |" in table
  records = [json.loads(l) for l in out.with_suffix(".items.jsonl").read_text().splitlines()]
  assert len(records) == 20 + 5 + 1 + 2
  by_key = {(r["benchmark"], r["id"]): r for r in records}
  assert by_key[("aime24", aime[0].id)]["correct"] == [False]
  assert by_key[("humaneval", he[0].id)]["completions"] == [he[0].tests["canonical_solution"]]
  assert by_key[("gpqa_diamond", gpqa[0].id)]["correct"] == [True]
  assert "completions" not in by_key[("gpqa_diamond", gpqa[0].id)]
  written = out.read_text() + table + out.with_suffix(".items.jsonl").read_text() + run.stderr
  leaked = any(i.messages[0]["content"][-200:] in written for i in gpqa)
  assert not leaked


def test_unknown_benchmarks_and_missing_files_are_named(tmp_path):
  preds = _write_jsonl(tmp_path / "preds.jsonl",
                       [{"benchmark": "aime24", "id": "60", "completion": "\\boxed{1}"}])
  out = tmp_path / "eval.json"
  run = _evaluate(f"--predictions={preds}", "--benchmarks=aime24,nope,mbpp,AIME25",
                  f"--data_dir={tmp_path}", f"--output={out}")
  assert run.returncode != 0
  assert "unknown benchmark(s) nope, AIME25" in run.stderr
  assert f"aime24: no aime24.jsonl in {tmp_path}" in run.stderr
  assert f"mbpp: no mbpp.jsonl in {tmp_path}" in run.stderr
  assert not out.exists()


def test_model_mode_samples_grades_and_reports_pass_at_k(tmp_path, shared_data):
  save_tiny_qwen3(tmp_path / "model")
  out = tmp_path / "eval.json"
  run = _evaluate(f"--checkpoint={tmp_path / 'model'}", "--benchmarks=math500,humaneval",
                  f"--data_dir={shared_data}", f"--output={out}", "--limit=4", "--max_new_tokens=8",
                  "--num_samples=2", "--temperature=1.0", "--batch_size=8")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "math500: 4/4 items" in run.stderr and "tokens/s" in run.stderr

  got = json.loads(out.read_text())["benchmarks"]
  assert list(got) == ["math500", "humaneval"]
  for summary in got.values():
    assert summary["n"] == 4 and summary["samples"] == 8
    assert 0.0 <= summary["accuracy"] <= 1.0 and 0.0 <= summary["pass@2"] <= 1.0
  assert "pass@2" in out.with_suffix(".md").read_text()
  records = [json.loads(l) for l in out.with_suffix(".items.jsonl").read_text().splitlines()]
  assert [(r["benchmark"], len(r["completions"]), len(r["correct"])) for r in records] == (
      [("math500", 2, 2)] * 4 + [("humaneval", 2, 2)] * 4)
  items = bm.load("math500", shared_data)[:4]
  assert [r["id"] for r in records[:4]] == [i.id for i in items]
