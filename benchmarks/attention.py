r"""Attention implementations side by side: compiled memory and forward + backward time.

  python -m benchmarks.attention --preset=small --lengths=256,512,1024,4096
  python -m benchmarks.attention --preset=qwen3_0p6b --lengths=4096 --dtype=bfloat16 \
      --impls=xla,cudnn,pallas_gpu,chunked --check      # on a GPU (benchmarks/gpu_attention.sh)

For each length T and implementation: XLA's temp bytes (`compile().memory_analysis()`) of the
model's forward + backward on one row of T tokens (loss on the final hidden states; with
`--head`, the LM head's log-likelihood too), with and without remat; the median time of that
step (`--repeats`, interleaved across implementations so that a slow spell hits all of them);
and the attention op alone, forward + backward. Prints one JSON line.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from grlo_jax import allocator, models
from grlo_jax.models import attention


def _model_step(cfg: models.ModelConfig, t: int, head: bool):
  graphdef, state = models.loading.abstract(cfg)

  def loss(params, ids_bt):
    x_btd, _ = nnx.merge(graphdef, params).hidden(ids_bt)
    if not head:
      return jnp.mean(jnp.square(x_btd.astype(jnp.float32)))
    logp = jax.nn.log_softmax(nnx.merge(graphdef, params).head(x_btd[:, :-1]), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, ids_bt[:, 1:, None], axis=-1))

  fn = jax.jit(jax.value_and_grad(loss))
  return fn, state, jax.ShapeDtypeStruct((1, t), jnp.int32)


def _op_step(cfg: models.ModelConfig, t: int, impl: str):
  dt = jnp.dtype(cfg.dtype)
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((1, t, cfg.num_heads, cfg.head_dim)), dt)
  k, v = (jnp.asarray(rng.standard_normal((1, t, cfg.num_kv_heads, cfg.head_dim)), dt) for _ in range(2))
  seg = jnp.ones((1, t), jnp.int32)
  loss = lambda q, k, v: jnp.sum(attention.attend(q, k, v, seg, impl=impl).astype(jnp.float32))
  fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return lambda: jax.block_until_ready(fn(q, k, v))


def _check(cfg: models.ModelConfig, t: int, impls: list[str]) -> dict:
  """Max error of each implementation against `xla` (outputs at real tokens and q/k/v gradients,
  relative to their scale) on rows of 3 packed segments, left padding and one all-padding row."""
  dt = jnp.dtype(cfg.dtype)
  rng = np.random.default_rng(1)
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  q = jnp.asarray(rng.standard_normal((3, t, n, h)), dt)
  kv = [jnp.asarray(rng.standard_normal((3, t, k, h)), dt) for _ in range(2)]
  seg = np.zeros((3, t), np.int32)
  a, b = t // 5, t // 2
  seg[0, :a], seg[0, a:b], seg[0, b:t - 7] = 1, 2, 3
  seg[1, t // 3:] = 1
  seg = jnp.asarray(seg)
  w = jnp.asarray(rng.standard_normal(q.shape), dt)

  def run(impl):
    f = lambda q, k, v: jnp.sum((attention.attend(q, k, v, seg, impl=impl) * w).astype(jnp.float32)
                                * (seg != 0)[..., None, None])
    o = jax.jit(lambda q, k, v: attention.attend(q, k, v, seg, impl=impl))(q, *kv)
    return [np.asarray(x, np.float32) for x in (o, *jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, *kv))]

  ref = run("xla")
  real = np.asarray(seg) != 0
  out = {}
  for impl in impls:
    if impl == "xla":
      continue
    got = run(impl)
    errs = [np.abs(got[0] - ref[0])[real].max() / np.abs(ref[0][real]).max()]
    errs += [np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got[1:], ref[1:])]
    out[f"{impl}_max_rel_err"] = float(max(errs))
    out[f"{impl}_finite"] = bool(all(np.isfinite(x).all() for x in got))
  return out


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="small")
  ap.add_argument("--lengths", default="256,512,1024,4096")
  ap.add_argument("--impls", default="xla,chunked")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--layers", type=int, default=0, help="override the preset's depth (0: keep)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--head", action="store_true", help="include the LM head's log-likelihood")
  ap.add_argument("--no_time", action="store_true", help="memory only")
  ap.add_argument("--check", action="store_true", help="compare every implementation with xla first")
  ap.add_argument("--timed", choices=["plain", "remat"], default="plain",
                  help="which variant's step is timed (remat: dense T=4096 without it needs ~13 GiB)")
  return ap


def run(args: argparse.Namespace) -> dict:
  """The benchmark's JSON for parsed `args` (`parser()`): what `main` prints."""
  impls = args.impls.split(",")
  rows = []
  if args.check:
    cfg = models.preset(args.preset, dtype=args.dtype, param_dtype=args.dtype)
    checks = _check(cfg, int(args.lengths.split(",")[0]), impls)
    common.log(json.dumps(checks))
  for t in (int(x) for x in args.lengths.split(",")):
    row = {"T": t}
    timers = {}
    for impl in impls:
      over = dict(attention=impl, dtype=args.dtype, param_dtype=args.dtype)
      if args.layers:
        over["num_layers"] = args.layers
      cfg = models.preset(args.preset, **over)
      for remat in (False, True):
        fn, state, ids = _model_step(cfg.replace(remat=remat), t, args.head)
        compiled = fn.lower(state, ids).compile()
        key = f"{impl}{'_remat' if remat else ''}_temp_gib"
        row[key] = round(compiled.memory_analysis().temp_size_in_bytes / 2**30, 4)
        if remat == (args.timed == "remat") and not args.no_time:
          _, real_state = nnx.split(models.init_model(cfg.replace(remat=remat), seed=0))
          ids_real = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (1, t)), jnp.int32)
          timers[f"{impl}_step_s"] = (lambda c=compiled, s=real_state, i=ids_real:
                                      jax.block_until_ready(c(s, i)))
          timers[f"{impl}_attention_op_s"] = _op_step(cfg, t, impl)
    for fn in timers.values():  # warm-up
      fn()
    times = {k: [] for k in timers}
    for _ in range(args.repeats):
      for k, fn in timers.items():
        t0 = time.perf_counter()
        fn()
        times[k].append(time.perf_counter() - t0)
    row.update({k: round(float(np.median(v)), 4) for k, v in times.items()})
    if "xla" in impls:
      for impl in impls[1:]:
        if f"{impl}_temp_gib" in row:
          row[f"{impl}_vs_xla_temp"] = round(row[f"{impl}_temp_gib"] / row["xla_temp_gib"], 3)
        if f"{impl}_step_s" in row:
          row[f"{impl}_vs_xla_step_time"] = round(row[f"{impl}_step_s"] / row["xla_step_s"], 3)
    common.log(json.dumps(row))
    rows.append(row)
  return {"benchmark": "attention", "preset": args.preset, "dtype": args.dtype, "head": args.head, "timed": args.timed,
          "backend": jax.default_backend(), "git": common.git_rev(), "machine": common.machine(),
          "checks": checks if args.check else None, "rows": rows}


def main() -> None:
  args = parser().parse_args()
  allocator.reexec_with_tcmalloc()
  print(json.dumps(run(args)))


if __name__ == "__main__":
  main()
