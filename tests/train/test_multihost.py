"""Multi-controller training: two local processes x 4 CPU devices form one 8-device mesh
(`jax.distributed`, gloo collectives). The run equals a 1-process 8-device run, each process reads
its own prompts, and checkpoints move between process counts and mesh shapes."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
from flax import nnx

from grlo_jax import models
from tests.train.test_cli import NANO, ROOT

STEPS = ["--config.checkpoint.every_steps=1"]


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  return env


def _cmd(workdir, steps, *flags):
  return [sys.executable, "launch/train.py", "--config=configs/grlo.py:tiny", f"--workdir={workdir}", *NANO,
          *STEPS, f"--config.total_steps={steps}", *flags]


def _run_one(workdir, steps, *flags) -> str:
  out = subprocess.run(_cmd(workdir, steps, *flags), cwd=ROOT, env=_env(8), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  return out.stdout + out.stderr


def _run_two(workdir, steps, *flags) -> list[str]:
  addr = f"localhost:{_port()}"
  procs = [subprocess.Popen(_cmd(workdir, steps, *flags, f"--coordinator_address={addr}", "--num_processes=2",
                                 f"--process_id={i}"), cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def _first_prompts(log: str) -> list[int]:
  (found,) = re.findall(r"first batch, prompts (\[[\d, ]*\])", log)
  return json.loads(found)


def _actor(workdir):
  return [np.asarray(x) for x in __import__("jax").tree.leaves(nnx.state(models.load_pretrained(workdir)))]


def _steps(workdir):
  return [json.loads(line)["step"] for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_and_checkpoints_move_across_processes_and_meshes(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  # Two processes, fsdp=8 over both: each reads its half of every global batch.
  outs = _run_two(multi, 2)
  assert "process 0 of 2, 4 local / 8 global devices" in outs[0]
  assert "step 2/2" in outs[0] and "step 2/2" not in outs[1]  # only process 0 logs progress ...
  assert _steps(multi) == [1, 2]  # ... and writes metrics, once a step

  # The same config on one process with 8 devices: the same parameters. Process 0 read the first
  # half of each global batch; had process 1 not read the other half, the updates would differ.
  log = _run_one(single, 2)
  p0, both = _first_prompts(outs[0]), _first_prompts(log)
  assert len(p0) == 4 and p0 == both[:4] and not set(p0) & set(both[4:])
  # Reductions split differently over processes round differently; Adam (lr 1e-3) turns that
  # into ~1e-5 differences. Two steps move each weight by up to 2e-3: 1e-4 is 5% of that.
  for a, b in zip(_actor(multi), _actor(single)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)

  # Resume the 2-process checkpoint on 2 processes with another mesh (fsdp=2 x tensor=4) ...
  outs = _run_two(multi, 3, "--config.mesh.fsdp=2", "--config.mesh.tensor=4")
  assert f"resuming from {multi}/checkpoints/2" in outs[0]
  # ... and then on 1 process: training carries on from step 3.
  log = _run_one(multi, 4)
  assert f"resuming from {multi}/checkpoints/3" in log
  assert _steps(multi) == [1, 2, 3, 4]
  assert all(np.isfinite(a).all() for a in _actor(multi))
