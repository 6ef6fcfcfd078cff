"""Scanned layers: compile time does not grow with depth."""

import json
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from grlo_jax import models


def _model(num_layers: int):
  return models.init_model(models.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                              num_layers=num_layers, num_heads=4, num_kv_heads=2, head_dim=16))


def _compile_seconds(model) -> float:
  fn = jax.jit(lambda m, i: m(i))
  t0 = time.perf_counter()
  fn.lower(model, jnp.zeros((2, 16), jnp.int32)).compile()
  seconds = time.perf_counter() - t0
  jax.clear_caches()
  return seconds


def best_compile_seconds() -> dict[str, float]:
  """Best of four compiles of a 2-layer and a 36-layer model, interleaved (a busy spell on a shared
  machine slows both depths alike), with no persistent compilation cache."""
  jax.config.update("jax_enable_compilation_cache", False)
  shallow, deep = _model(2), _model(36)
  two = thirty_six = float("inf")
  for _ in range(4):
    two = min(two, _compile_seconds(shallow))
    thirty_six = min(thirty_six, _compile_seconds(deep))
  return {"two": two, "thirty_six": thirty_six}


def test_36_layers_compile_within_2x_of_2_layers():
  # In a fresh process: late in the suite, the test process's own state (caches, heap) once made
  # the deep compile 4x the shallow one here, while the same test alone gave under 2x.
  code = "import json; from tests.models import test_compile as t; print(json.dumps(t.best_compile_seconds()))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  s = json.loads(out.stdout.strip().splitlines()[-1])
  assert s["thirty_six"] <= 2 * s["two"], f"36 layers: {s['thirty_six']:.2f}s, 2 layers: {s['two']:.2f}s"
