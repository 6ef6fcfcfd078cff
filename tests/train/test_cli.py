"""launch/train.py as users run it: preemption (SIGTERM), SIGKILL mid-save, resume, then sampling
from the checkpoint with launch/generate.py. Subprocesses on one CPU device."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import SHARED_DATA

ROOT = pathlib.Path(__file__).resolve().parents[2]
NANO = ["--config.data.train_batch_size=8", "--config.actor.ppo_mini_batch_size=4",
        "--config.actor.micro_batch_size=4", "--config.rollout.response_length=8", "--config.log.tensorboard=False"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
  return env


def _train(workdir, *flags, **kw) -> subprocess.Popen:
  cmd = [sys.executable, "launch/train.py", "--config=configs/grlo.py:tiny", f"--workdir={workdir}", *NANO, *flags]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kw)


def _wait_for(predicate, proc, timeout=300):
  t0 = time.time()
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"exited {proc.returncode} early:\n{proc.stdout.read()[-3000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      raise AssertionError("timed out")
    time.sleep(0.05)


def _steps(workdir):
  root = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _metrics(workdir):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigkill_mid_save_then_sigterm_then_resume_and_generate(tmp_path):
  work = tmp_path / "run"
  # 1. SIGKILL while a checkpoint is being written (its temporary folder exists).
  proc = _train(work, "--config.total_steps=1000", "--config.checkpoint.every_steps=1")
  tmp_ckpt = lambda: any(".orbax-checkpoint-tmp" in p.name for p in (work / "checkpoints").glob("*")) \
      if (work / "checkpoints").is_dir() else False
  _wait_for(lambda: len(_steps(work)) >= 1 and tmp_ckpt(), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  complete = _steps(work)
  assert complete, "no complete checkpoint before the kill"

  # 2. Resume: it starts after the last complete step; SIGTERM saves and exits 0.
  proc = _train(work, "--config.total_steps=1000", "--config.checkpoint.every_steps=1000")
  _wait_for(lambda: any(r["step"] > complete[-1] + 1 for r in _metrics(work)), proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM" in out
  last = _steps(work)[-1]
  assert last > complete[-1] + 1
  assert f"resuming from {work / 'checkpoints'}/{complete[-1]}" in out
  steps = [r["step"] for r in _metrics(work)]
  assert steps[-1] == last and sorted(set(steps)) == list(range(1, last + 1))

  # 3. The checkpoint samples with launch/generate.py (model and tokenizer from the workdir).
  gen = subprocess.run([sys.executable, "launch/generate.py", f"--checkpoint={work}", "--prompt=Hello",
                        "--max_new_tokens=4", "--json", "--chat"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
  assert gen.returncode == 0, gen.stderr[-3000:]
  result = json.loads(gen.stdout.strip().splitlines()[-1])
  assert 1 <= result["num_tokens"] <= 4

  # 4. launch/evaluate.py on the workdir (near-zero scores expected: the point is the path).
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not found: evaluation part skipped")
  out = tmp_path / "eval.json"
  ev = subprocess.run([sys.executable, "launch/evaluate.py", f"--checkpoint={work}", "--benchmarks=math500",
                       f"--data_dir={SHARED_DATA / 'eval'}", f"--output={out}", "--limit=2", "--max_new_tokens=4",
                       "--batch_size=2"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  report = json.loads(out.read_text())["benchmarks"]["math500"]
  assert report["n"] == 2 and 0.0 <= report["accuracy"] <= 1.0


@pytest.mark.parametrize("flag, message", [
    ("--config.nope=1", "nope"),
    ("--config.actor.optim.lr=fast", "lr"),
])
def test_config_errors_name_the_key(tmp_path, flag, message):
  proc = _train(tmp_path, flag)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert message in out
  assert not (tmp_path / "checkpoints").exists()
