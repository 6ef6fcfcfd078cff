"""Where training numbers go: `metrics.jsonl`, TensorBoard, a console progress line.

Only process 0 writes (`MetricWriter(..., enabled=jax.process_index() == 0)`); the others get a
writer that does nothing, so the loop needs no `if` around logging.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Mapping

import numpy as np
from etils import epath

log = logging.getLogger(__name__)


def peak_host_gib() -> float:
  """This process's peak resident memory so far (`system/peak_host_gib`)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _jsonable(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


class MetricWriter:
  """Appends one JSON object per step to `workdir/metrics.jsonl` and scalars to TensorBoard."""

  def __init__(self, workdir: epath.PathLike, *, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = (workdir / "metrics.jsonl").open("a")
    self._samples = (workdir / "samples.jsonl").open("a")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # light: no TensorFlow needed
        self._tb = SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:
        log.warning("tensorboardX is not installed: TensorBoard logging is off")

  def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **{k: _jsonable(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        if np.ndim(v) == 0 and math.isfinite(float(v)):
          self._tb.add_scalar(k, float(v), step)
      self._tb.flush()

  def samples(self, step: int, rows: list[dict]) -> None:
    if not self.enabled:
      return
    for row in rows:
      self._samples.write(json.dumps({"step": step, **row}) + "\n")
    self._samples.flush()
    if self._tb is not None and rows:
      text = "\n\n".join(f"**prompt** {r['prompt']}\n\n**response** {r['response']}\n\n**reward** "
                         f"{r['reward']:.4f}" for r in rows)
      self._tb.add_text("samples", text, step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._samples.close()
      if self._tb is not None:
        self._tb.close()


class Progress:
  """A console line per step: step / total, tokens/s, reward, ETA (steps/s measured after the
  first, compile-bearing, step)."""

  def __init__(self, total_steps: int):
    self.total = total_steps
    self._t0 = None
    self._timed_from = 0

  def line(self, step: int, step_seconds: float, tokens: float, reward: float, label: str = "reward") -> str:
    now = time.perf_counter()
    if self._t0 is None:  # the first step compiles: time the rest
      self._t0, self._timed_from = now, step
    done = step - self._timed_from
    per_step = (now - self._t0) / done if done else step_seconds
    eta = max(self.total - step, 0) * per_step
    pct = 100.0 * step / max(self.total, 1)
    return (f"step {step}/{self.total} ({pct:.0f}%) | {tokens / max(step_seconds, 1e-9):,.0f} tok/s | "
            f"{step_seconds:.2f} s/step | {label} {reward:+.4f} | ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
