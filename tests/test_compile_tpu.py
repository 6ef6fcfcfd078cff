"""The TPU compiler (libtpu, requirements-tpu.txt) compiles the tiny RLVR step for a TPU
topology on this CPU host: `launch/plan.py --compile_for`. In its own process, so that libtpu's
start-up never reaches the rest of the suite."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu not installed (pip install -r requirements-tpu.txt)")


def test_compile_for_a_tpu_topology():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             # Another process on the host may hold libtpu's lockfile; compiling needs no TPU.
             ALLOW_MULTIPLE_LIBTPU_LOAD="1")
  env.pop("XLA_FLAGS", None)  # the suite's 8 CPU devices are not the topology's
  # The padded tiny step: half the compile time of the recipe-shaped one (tests/test_lowering.py
  # covers that one's lowering), the same path through the compiler.
  cmd = [sys.executable, "launch/plan.py", "--config=configs/rlvr.py:tiny", "--compile_for=v5e:2x2"]
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  m = out["compiled"]
  assert (m["chips"], m["mesh"]["fsdp"], m["device_kind"]) == (4, 4, "TPU v5 lite")
  assert m["hbm_bytes"] == 16 * 2**30 and m["fits"]
  # The donated train state comes back in place: outputs alias the arguments.
  assert 0 < m["alias_bytes"] <= m["argument_bytes"] and m["temp_bytes"] > 0
  assert m["peak_bytes"] == m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"] + m["temp_bytes"]
  # FSDP over 4 chips: weights all-gathered for the rollout and the update.
  gathers = m["collectives"]["all-gather"]["by_phase"]
  assert gathers.get("rollout", 0) > 0 and gathers.get("actor_update", 0) > 0, gathers
  assert out["planned_peak_bytes"] > 0
