"""Evaluation on GRLO records with a ground truth: grading, and launch/evaluate.py --records."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from grlo_jax import data
from grlo_jax.eval import records as records_lib
from tests.eval.test_runner import save_tiny_qwen3

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_grade_records_with_the_math_verifier():
  items = records_lib.records_to_items(data.read_records("arithmetic:test:4"), "arith")
  right = [f"so the answer is \\boxed{{{it.answer}}}" for it in items[:3]]
  completions = [[c] for c in right] + [[f"\\boxed{{{int(items[3].answer) + 1}}}"]]
  report = records_lib.grade(items, completions)
  assert report["benchmarks"]["arith"] == {"accuracy": 0.75, "n": 4, "samples": 4, "pass@1": 0.75}
  assert [r["correct"] for r in report["items"]] == [[True], [True], [True], [False]]


def test_records_without_ground_truth_are_named(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text(json.dumps({"data_source": "x", "prompt": [{"role": "user", "content": "hi"}],
                              "reward_model": {"style": "model", "ground_truth": ""}}) + "\n")
  with pytest.raises(ValueError, match="record 0 has no reward_model.ground_truth"):
    records_lib.records_to_items(data.read_records(str(path)), str(path))


def test_evaluate_cli_on_records(tmp_path):
  save_tiny_qwen3(tmp_path / "model")
  out = tmp_path / "eval" / "before.json"
  run = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "evaluate.py"), f"--checkpoint={tmp_path / 'model'}",
       "--records=arithmetic:test:6", "--max_new_tokens=4", "--batch_size=4", f"--output={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=os.environ | {"PYTHONPATH": str(ROOT)})
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["step"] == 0 and report["benchmarks"]["arithmetic:test:6"]["n"] == 6
  assert len(out.with_suffix(".items.jsonl").read_text().splitlines()) == 6
  assert "xla_bridge.py" not in run.stderr  # library INFO lines only at --verbosity=1
