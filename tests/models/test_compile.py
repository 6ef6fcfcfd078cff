"""Scanned layers: compile time does not grow with depth."""

import time

import jax
import jax.numpy as jnp

from grlo_jax import models


def _compile_seconds(num_layers: int) -> float:
  cfg = models.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=num_layers,
                           num_heads=4, num_kv_heads=2, head_dim=16)
  model = models.init_model(cfg)
  ids = jnp.zeros((2, 16), jnp.int32)
  best = float("inf")
  for _ in range(2):  # the min of two damps scheduler noise on a busy machine
    fn = jax.jit(lambda m, i: m(i))
    t0 = time.perf_counter()
    fn.lower(model, ids).compile()
    best = min(best, time.perf_counter() - t0)
    jax.clear_caches()
  return best


def test_36_layers_compile_within_2x_of_2_layers():
  two, deep = _compile_seconds(2), _compile_seconds(36)
  assert deep <= 2 * two, f"36 layers: {deep:.2f}s, 2 layers: {two:.2f}s"
