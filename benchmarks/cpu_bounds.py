r"""What this machine allows: the lower bounds on a decode step and an RL step, from measured rates.

  python -m benchmarks.cpu_bounds --preset=small

Measures, in one process: host memory streaming (NumPy sum over 1 GiB), the best rate of XLA's
dense dots at the RL update's shapes ([8 x (P + R), D] x [D, F], float32), and how fast XLA
streams the weights of one-token decode dots ([B, X] x [X, Y]). From them and the preset's FLOP
and byte counts it prints each phase's floor:
- decode: the bytes a step reads (weights + the full KV cache) at the streaming rate;
- update (GRPO with a KL loss, as `benchmarks/rl_step.py`): reference forward + actor forward and
  backward (3x forward) at the best dense-dot rate, nothing else counted.
Prints one JSON line; these are floors, not predictions.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, rl_step
from grlo_jax import allocator, models
from grlo_jax.models import flops
from grlo_jax.models.transformer import DECODE_PAD
from grlo_jax.rl import flops as rl_flops


def _best(fn, *args, repeats: int = 10) -> float:
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def stream_gb_s() -> float:
  x = np.ones(2**28, np.float32)  # 1 GiB
  best = float("inf")
  for _ in range(5):
    t0 = time.perf_counter()
    x.sum()
    best = min(best, time.perf_counter() - t0)
  return x.nbytes / best / 1e9


def dense_gflop_s(m: int, k: int, n: int) -> float:
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
  return 2 * m * k * n / _best(lambda x, w: x @ w, x, w) / 1e9


def decode_dot_gb_s(b: int, shapes: list[tuple[int, int]]) -> float:
  """Weights streamed per second by a chain of [b, X] x [X, Y] dots over 64 MB+ of distinct weights."""
  rng = np.random.default_rng(0)
  reps = max(1, int(64e6 // sum(4 * x * y for x, y in shapes)))
  ws = [jnp.asarray(rng.standard_normal((x, y)), jnp.float32) for _ in range(reps) for x, y in shapes]
  xs = {x: jnp.asarray(rng.standard_normal((b, x)), jnp.float32) for x, _ in shapes}
  nbytes = sum(w.nbytes for w in ws)
  return nbytes / _best(lambda xs, ws: [xs[w.shape[0]] @ w for w in ws], xs, ws) / 1e9


def main():
  allocator.reexec_with_tcmalloc()
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="small", choices=["tiny", "small"])
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=64)
  ap.add_argument("--new_tokens", type=int, default=128)
  a = ap.parse_args()
  cfg = models.preset(a.preset)
  d, f, v, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
  nh, kh = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  b, p, r = a.batch, a.prompt_len, a.new_tokens
  t = p + r
  layer_params = flops.layer_weights(cfg)
  # The GRPO step of `rl_step` as it computes it (every position's attention): the reference
  # forward and the actor's forward + backward.
  prompts = b // rl_step.SHAPES["grpo"][1]
  phases = rl_flops.step_flops(rl_step.rl_config("grpo", prompts, r, 0.04), cfg, prompts, p, causal=False)
  update_flop = phases["reference"] + phases["update"]
  cache_bytes = 2 * layers * b * kh * t * 4
  step_bytes = 4 * (layer_params * layers + d * v) + cache_bytes

  gb_s = stream_gb_s()
  gflop_s = max(dense_gflop_s(b * t, d, f), dense_gflop_s(b * t, f, d), dense_gflop_s(b * t, d, 2 * f))
  pad = DECODE_PAD  # as `Transformer.decode_layers` lays the weights out
  decode_gb_s = decode_dot_gb_s(b, [(d, 2 * f + pad), (f, d + pad), (d, nh + pad), (nh, d + pad), (d, kh + pad)])
  head_gb_s = decode_dot_gb_s(b, [(d, v)])
  decode_floor_s = step_bytes / (gb_s * 1e9)
  decode_xla_s = 4 * layer_params * layers / (decode_gb_s * 1e9) + 4 * d * v / (head_gb_s * 1e9)
  print(json.dumps({
      "bench": "cpu_bounds", "preset": a.preset, "batch": b, "prompt_len": p, "new_tokens": r,
      **common.machine(), "git": common.git_rev(),
      "stream_gb_s": gb_s, "dense_dot_gflop_s": gflop_s,
      "decode_dot_weights_gb_s": decode_gb_s, "decode_head_gb_s": head_gb_s,
      "decode_step_bytes": step_bytes,
      "decode_step_floor_ms": {"at_stream_rate": decode_floor_s * 1e3,
                               "dots_at_xla_decode_rates": decode_xla_s * 1e3},
      "update_gflop": update_flop / 1e9,
      "update_floor_s_at_best_dot_rate": update_flop / (gflop_s * 1e9),
  }))


if __name__ == "__main__":
  main()
