r"""One GPU check, four sections, one JSON line: what the round's GPU claims rest on.

  python -m benchmarks.gpu_check                # on one H100 / H200 (benchmarks/gpu_check.sh)
  python -m benchmarks.gpu_check --cpu          # the same path at tiny sizes, on any CPU

Each section is an existing benchmark called as a library (its `parser()` / `run()`):
  attention   cuDNN and the Pallas GPU kernel against xla (`benchmarks.attention`): parity on
              rows with segment ids (3 packed segments, left padding, an all-padding row), then
              forward + backward time of a Qwen3-0.6B-shaped model and of the attention op alone
              at T = 4096, bfloat16.
  long_tail   the GRLO step (PPO + critic + RM) packed vs padded on the long-tail workload
              (`benchmarks.long_tail`), Qwen3-0.6B-shaped, random weights, bfloat16 compute,
              with seconds by phase (`--phases`).
  update_mfu  from the packed side above: the update pass's FLOPs on real tokens (`rl.flops`)
              over the seconds of its `actor_update` + `critic_update` phases, over the chip's
              dense peak; and the whole step's TFLOP/s on real tokens.
  decode      the rollout engine over 64 slots (`benchmarks.sampler` long-tail workload, 128
              prompts) against the static sampler: generated tokens/s, and the fraction of the
              HBM roofline it reaches (each decode iteration must read every weight once and the
              live slots' KV cache at their mean context; roofline seconds = iterations x those
              bytes / HBM bandwidth).

A section that fails records {"error": ...} and the others still run. Peak figures come from the
device kind (H100 / H200: 989 dense bfloat16 TFLOP/s; 3.35 / 4.8 TB/s) or --peak_tflops /
--hbm_gbps. Nothing is downloaded: every model is drawn at random. Logs go to stderr.
"""

import argparse
import json
import time
import traceback

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import attention, common, long_tail, sampler
from grlo_jax import allocator, models

# Dense bfloat16 peak TFLOP/s and HBM GB/s by device kind (vendor sheets, SXM parts).
CHIPS = {"H100": (989.0, 3350.0), "H200": (989.0, 4800.0)}

# name -> (full size on a GPU, tiny size for --cpu): the arguments each benchmark's parser takes.
SIZES = {
    "attention": (["--preset=qwen3_0p6b", "--dtype=bfloat16", "--lengths=4096", "--impls=xla,cudnn,pallas_gpu",
                   "--check", "--repeats=5"],
                  ["--preset=nano", "--dtype=float32", "--lengths=128", "--impls=xla,chunked", "--check",
                   "--repeats=1"]),
    "long_tail": (["--preset=qwen3_0p6b", "--dtype=bfloat16", "--prompts=64", "--response_length=512",
                   "--micro=16", "--repeats=1", "--short_vs_long=0", "--phases"],
                  ["--preset=nano", "--prompts=4", "--response_length=16", "--micro=2", "--repeats=1",
                   "--short_vs_long=0", "--phases"]),
    "decode": (["--long_tail", "--batch=128", "--max_num_seqs=64", "--new_tokens=512", "--mean_length=170",
                "--prefill_chunk=128", "--repeats=2"],
               ["--long_tail", "--batch=8", "--max_num_seqs=4", "--new_tokens=16", "--mean_length=6",
                "--prefill_chunk=16", "--repeats=1"]),
}
DECODE_PRESET = ("qwen3_0p6b", "nano")
DECODE_DTYPE = ("bfloat16", "float32")


def chip_peaks(kind: str, peak_tflops: float | None, hbm_gbps: float | None) -> tuple[float | None, float | None]:
  known = next((v for k, v in CHIPS.items() if k in kind), (None, None))
  return peak_tflops or known[0], hbm_gbps or known[1]


def update_mfu(lt: dict, peak_tflops: float | None) -> dict:
  """The packed side's update pass on real tokens: TFLOP/s over its phase seconds, and MFU."""
  side = lt["packed"]
  seconds = sum(side.get("phases_s", {}).get(k, 0.0) for k in ("actor_update", "critic_update"))
  useful = side["update_gflop"]["useful"] * 1e9
  out = {"update_useful_gflop": useful / 1e9, "update_computed_gflop": side["update_gflop"]["computed"],
         "update_s": seconds or None, "step_s": side["median_s"], "peak_tflops": peak_tflops}
  out["update_tflop_per_s"] = useful / seconds / 1e12 if seconds else None
  out["update_mfu"] = out["update_tflop_per_s"] / peak_tflops if seconds and peak_tflops else None
  if not seconds:
    out["note"] = "no actor_update / critic_update events in the profiler trace (benchmarks/phases.py)"
  return out


def decode_roofline(model: models.Transformer, res: dict, slots: int, hbm_gbps: float | None) -> dict:
  """Tokens/s of the engine and the fraction of the HBM roofline: every decode iteration reads each
  weight once (the tied Qwen3-0.6B head reads the whole embedding) and the live slots' keys and
  values at their mean context. The measured seconds include the refills' prefill, so the
  fraction understates the decode's own."""
  cfg = model.cfg
  side = res[f"continuous_{slots}"]
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model)))
  context = res["prompt_len_mean"] + side["mean_length"] / 2
  kv_bytes = (slots * side["slot_utilization"] * context * 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim
              * jnp.dtype(cfg.dtype).itemsize)
  iterations = side["decode_iterations"]
  out = {"slots": slots, "tok_per_s": side["tok_per_s"], "static_tok_per_s": res["static"]["tok_per_s"],
         "speedup_vs_static": res[f"speedup_{slots}"], "decode_iterations": iterations,
         "slot_utilization": side["slot_utilization"], "weight_bytes": int(weight_bytes),
         "kv_bytes_per_iteration": int(kv_bytes), "hbm_gbps": hbm_gbps}
  if hbm_gbps:
    roofline_s = iterations * (weight_bytes + kv_bytes) / (hbm_gbps * 1e9)
    out["roofline_tok_per_s"] = side["tokens"] / roofline_s
    out["fraction_of_hbm_roofline"] = roofline_s / side["median_s"]
  return out


def _section(name: str, fn, deadline: float) -> dict:
  if time.perf_counter() > deadline:  # the next section would overrun the run's budget: say so instead
    return {"error": "skipped: --budget_s spent by the sections before it"}
  common.log(f"gpu_check: {name} ...")
  t0 = time.perf_counter()
  try:
    out = fn()
  except Exception as e:  # noqa: BLE001 (one failed section must not lose the others)
    common.log(traceback.format_exc())
    out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
  out["section_s"] = round(time.perf_counter() - t0, 1)
  common.log(f"gpu_check: {name}: {json.dumps(out)[:2000]}")
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--cpu", action="store_true", help="tiny sizes, CPU implementations: checks the path, not the chip")
  ap.add_argument("--peak_tflops", type=float, default=None, help="dense peak a device (default: by device kind)")
  ap.add_argument("--hbm_gbps", type=float, default=None, help="HBM GB/s (default: by device kind)")
  ap.add_argument("--sections", default="attention,long_tail,update_mfu,decode")
  ap.add_argument("--budget_s", type=float, default=360.0,
                  help="start no section after this many seconds (gpu_check.sh stops the run at 480)")
  a = ap.parse_args()
  allocator.reexec_with_tcmalloc()
  size = 1 if a.cpu else 0
  kind = jax.devices()[0].device_kind
  peak, hbm = chip_peaks(kind, a.peak_tflops, a.hbm_gbps)
  wanted = a.sections.split(",")
  out = {"bench": "gpu_check", "cpu": a.cpu, "device": kind, "backend": jax.default_backend(),
         "n_devices": jax.device_count(), "jax": jax.__version__, "git": common.git_rev(), **common.machine()}
  t0 = time.perf_counter()
  deadline = t0 + a.budget_s
  if "attention" in wanted:
    out["attention"] = _section("attention", lambda: attention.run(attention.parser().parse_args(
        SIZES["attention"][size])), deadline)
  lt = None
  if "long_tail" in wanted or "update_mfu" in wanted:
    out["long_tail"] = lt = _section("long_tail", lambda: long_tail.run(long_tail.parser().parse_args(
        SIZES["long_tail"][size])), deadline)
  if "update_mfu" in wanted:
    out["update_mfu"] = _section("update_mfu", lambda: update_mfu(lt, peak), float("inf"))
  if "decode" in wanted:
    def decode():
      args = sampler.parser().parse_args(SIZES["decode"][size])
      dtype = DECODE_DTYPE[size]
      model = models.init_model(models.preset(DECODE_PRESET[size], param_dtype=dtype, dtype=dtype), seed=0)
      return decode_roofline(model, sampler.bench_long_tail(model, args), int(args.max_num_seqs), hbm)
    out["decode"] = _section("decode", decode, deadline)
  out["total_s"] = round(time.perf_counter() - t0, 1)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
