r"""The README's first command, measured: wall time, steps/s, tokens/s and peak host memory.

  python -m benchmarks.train_tiny [--workdir=/tmp/grlo_tiny_bench] [--extra=--config.total_steps=100]

Runs `launch/train.py --config=configs/grlo.py:tiny` in a subprocess (a fresh workdir, so no
resume) and summarises its `metrics.jsonl`: steady-state figures leave out the first step, which
compiles. Prints one JSON line.
"""

import argparse
import json
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks import common

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default="/tmp/grlo_tiny_bench")
  ap.add_argument("--extra", action="append", default=[], help="more flags for launch/train.py")
  a = ap.parse_args()
  shutil.rmtree(a.workdir, ignore_errors=True)
  cmd = [sys.executable, "launch/train.py", "--config=configs/grlo.py:tiny", f"--workdir={a.workdir}", *a.extra]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode:
    sys.exit(proc.stderr[-3000:])
  rows = [json.loads(line) for line in (pathlib.Path(a.workdir) / "metrics.jsonl").read_text().splitlines()]
  steady = rows[1:]
  step_s = sum(r["time/step_s"] for r in steady)
  tokens = sum(r["tokens/total"] for r in steady)
  reward = [r["reward/mean"] for r in rows]
  k = max(1, len(rows) // 10)
  print(json.dumps({
      "bench": "train_tiny", "command": " ".join(cmd[1:]), "wall_s": wall, "steps": len(rows),
      "first_step_s": rows[0]["time/step_s"], "steps_per_s": len(steady) / step_s,
      "tokens_per_s": tokens / step_s, "tokens_per_step": statistics.median(r["tokens/total"] for r in rows),
      "reward_first_10pct": statistics.mean(reward[:k]), "reward_last_10pct": statistics.mean(reward[-k:]),
      "peak_host_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
      **common.machine(), "git": common.git_rev()}))


if __name__ == "__main__":
  main()
