"""launch/plot.py: a PNG of a run's curves from metrics.jsonl and evaluate.py reports."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "launch"))
import plot  # noqa: E402


def _workdir(tmp_path, keys):
  rows = [{"step": s, **{k: 0.1 * s for k in keys}} for s in range(1, 6)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return tmp_path


def test_plot_writes_png_with_the_logged_panels(tmp_path):
  wd = _workdir(tmp_path, ["reward/mean", "reward/std", "response_length/mean", "response_length/min",
                           "response_length/max", "actor/entropy", "actor/ppo_kl", "actor/grad_norm",
                           "time/step_s"])
  (wd / "eval").mkdir()
  (wd / "eval" / "before.json").write_text(json.dumps({"benchmarks": {"a": {"accuracy": 0.1}}, "step": 0}))
  (wd / "eval" / "after.json").write_text(json.dumps({"benchmarks": {"a": {"accuracy": 0.5}}, "step": 5}))
  assert plot.held_out(wd, plot.read_metrics(wd / "metrics.jsonl")) == {"a": [(0, 0.1), (5, 0.5)]}
  out = tmp_path / "c.png"
  drawn = plot.plot(wd, out)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(drawn) == 6


def test_plot_names_what_is_missing(tmp_path):
  wd = _workdir(tmp_path, ["reward/mean"])
  assert plot.plot(wd, tmp_path / "c.png") == ["reward"]
  with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
    plot.plot(tmp_path / "nothing", tmp_path / "d.png")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2: invalid JSON"):
    plot.plot(tmp_path / "bad", tmp_path / "e.png")


def test_plot_rlhf_layout_and_explained_variance(tmp_path):
  rows = [{"step": s, "reward/mean": 0.5 * s, "reward/std": 1.0, "critic/vf_loss": 0.5 / s,
           "actor/kl_to_ref": 0.01 * s} for s in range(1, 5)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "before.json").write_text(json.dumps({"benchmarks": {"a": {"accuracy": 0.1}}, "step": 0}))
  steps, ev = plot.explained_variance(plot.read_metrics(tmp_path / "metrics.jsonl"))
  assert steps == [1, 2, 3, 4] and ev == pytest.approx([0.0, 0.5, 1 - 1 / 3, 0.75])
  out = tmp_path / "r.png"
  assert plot.plot_rlhf(tmp_path, out) == ["score", "actor/kl_to_ref", "critic"]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
