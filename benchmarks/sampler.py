r"""Sampler throughput: grlo_jax's in-graph sampler vs transformers' generate (and Tunix), same weights.

  python benchmarks/sampler.py --preset=small --batch=8 [--tunix_python=/path/venv/bin/python]
  python benchmarks/sampler.py --long_tail --preset=small --batch=64 --new_tokens=512 \
      --mean_length=85 --max_num_seqs=16,32

Random prompts of --prompt_len tokens, --new_tokens sampled at temperature 1 with no early stop,
one warm-up then the median of --repeats. Prints one JSON line; logs go to stderr.

--long_tail: the long-tail workload (`common.long_tail_prompts` / `long_tail_stop_ids`: GRLO
prompt lengths, about geometric response lengths of mean --mean_length, capped at --new_tokens),
the static sampler (all rows at once) against the rollout engine (--max_num_seqs slots, refills
prefilled --prefill_chunk tokens at a time) on the same prompts and weights in one run: useful
(generated) tokens/s, slot utilization, decode iterations, refills, and each compiled rollout's
temp bytes (XLA's memory_analysis).
"""

import argparse
import dataclasses
import json
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from grlo_jax import allocator, models
from grlo_jax.sampling import generate


def bench_ours(path, ids_bp, new_tokens, repeats):
  model = models.load_pretrained(path, dtype="float32")
  mask_bp = jnp.ones_like(ids_bp)

  def run():
    return jax.block_until_ready(generate(model, ids_bp, mask_bp, max_new_tokens=new_tokens,
                                          temperature=1.0, rng=jax.random.key(0)))

  first, _ = common.timed(run, 1)
  sec, times = common.timed(run, repeats)
  tokens = int(run().mask.sum())  # generated tokens, not loop steps
  return {"tok_per_s": tokens / sec, "median_s": sec, "times_s": times, "compile_s": first - sec,
          "tokens": tokens}


def bench_long_tail(model: models.Transformer, a) -> dict:
  """Static vs the rollout engine on the long-tail workload (`a`: `--long_tail`'s arguments)."""
  from flax import nnx

  from grlo_jax import rollout, sampling, static_sampler

  cfg = model.cfg
  ids_bp, mask_bp = (jnp.asarray(x) for x in common.long_tail_prompts(a.batch, cfg.vocab_size, seed=0))
  stops = common.long_tail_stop_ids(cfg.vocab_size, a.mean_length, seed=0)
  rng = jax.random.key(0)
  base = sampling.SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, stop_token_ids=stops)
  graphdef, state = nnx.split(model)
  result = {"prompt_len_max": int(ids_bp.shape[1]), "prompt_len_mean": float(mask_bp.sum(1).mean()),
            "num_stop_ids": len(stops)}
  slot_counts = [int(x) for x in str(a.max_num_seqs).split(",")]
  for name, s in [("static", None)] + [(f"continuous_{n}", n) for n in slot_counts]:
    p = dataclasses.replace(base, max_num_seqs=s, prefill_chunk=a.prefill_chunk) if s else base
    fn = rollout._generate_jit if s else static_sampler._generate_jit  # the jitted rollout, for its memory
    temp = fn.lower(graphdef, state, ids_bp, mask_bp, rng, p).compile().memory_analysis().temp_size_in_bytes

    last = {}

    def run():
      last["out"] = jax.block_until_ready(rollout.generate(model, ids_bp, mask_bp, rng, p))

    first, _ = common.timed(run, 1)
    sec, times = common.timed(run, a.repeats)
    out, stats = last["out"]
    tokens = int(out.mask.sum())
    result[name] = {"tok_per_s": tokens / sec, "median_s": sec, "times_s": times, "compile_s": first - sec,
                    "tokens": tokens, "mean_length": float(out.lengths.mean()),
                    "max_length": int(out.lengths.max()), "temp_bytes": int(temp),
                    **{k.split("/")[1]: float(v) for k, v in jax.device_get(stats.metrics()).items()}}
    common.log(name, result[name])
  for n in slot_counts:
    cont, static = result[f"continuous_{n}"], result["static"]
    result[f"speedup_{n}"] = cont["tok_per_s"] / static["tok_per_s"]
    result[f"temp_bytes_ratio_{n}"] = cont["temp_bytes"] / static["temp_bytes"]
  return result


def bench_transformers(path, ids_bp, new_tokens, repeats):
  import torch
  import transformers

  hf = transformers.Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  ids = torch.from_numpy(np.asarray(ids_bp, np.int64))
  out = {}

  def run():
    with torch.no_grad():
      out["seq"] = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                               temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, pad_token_id=0)

  common.timed(run, 1)
  sec, times = common.timed(run, repeats)
  tokens = int(out["seq"][:, ids.shape[1]:].numel())
  return {"tok_per_s": tokens / sec, "median_s": sec, "times_s": times, "tokens": tokens,
          "torch_threads": torch.get_num_threads()}


def bench_tunix(python, path, ids_bp, new_tokens, repeats):
  with tempfile.NamedTemporaryFile(suffix=".npy") as f:
    np.save(f.name, np.asarray(ids_bp))
    return common.run_peer(python, "tunix_sampler.py", [f"--model={path}", f"--prompts={f.name}",
                                                        f"--new_tokens={new_tokens}", f"--repeats={repeats}"])


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="small", choices=["tiny", "small"])
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=64)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--no_transformers", action="store_true")
  ap.add_argument("--tunix_python", default=None, help="python of a venv with google-tunix")
  ap.add_argument("--long_tail", action="store_true", help="static vs continuous on the long-tail workload")
  ap.add_argument("--mean_length", type=float, default=85.0)
  ap.add_argument("--max_num_seqs", default="16", help="slots of the rollout engine; a comma list runs each")
  ap.add_argument("--prefill_chunk", type=int, default=128)
  return ap


def main():
  allocator.reexec_with_tcmalloc()  # the peers' subprocesses inherit it: same allocator for all
  a = parser().parse_args()
  if a.long_tail:
    with tempfile.TemporaryDirectory() as tmp:
      path = common.save_hf_preset(a.preset, pathlib.Path(tmp))
      result = {"bench": "sampler_long_tail", "preset": a.preset, "batch": a.batch, "new_tokens": a.new_tokens,
                "mean_length_target": a.mean_length, "max_num_seqs": a.max_num_seqs,
                "prefill_chunk": a.prefill_chunk, "repeats": a.repeats, "dtype": "float32",
                "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
                **common.machine(), "git": common.git_rev(),
                **bench_long_tail(models.load_pretrained(path, dtype="float32"), a)}
    print(json.dumps(result))
    return

  ids_bp = jnp.asarray(np.random.default_rng(0).integers(1, models.preset(a.preset).vocab_size,
                                                         size=(a.batch, a.prompt_len)), jnp.int32)
  with tempfile.TemporaryDirectory() as tmp:
    path = common.save_hf_preset(a.preset, pathlib.Path(tmp))
    result = {"bench": "sampler", "preset": a.preset, "batch": a.batch, "prompt_len": a.prompt_len,
              "new_tokens": a.new_tokens, "repeats": a.repeats, "dtype": "float32",
              "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
              **common.machine(), "git": common.git_rev()}
    common.log("grlo_jax ...")
    result["grlo_jax"] = bench_ours(path, ids_bp, a.new_tokens, a.repeats)
    if not a.no_transformers:
      common.log("transformers ...")
      result["transformers"] = bench_transformers(path, ids_bp, a.new_tokens, a.repeats)
      result["ratio_vs_transformers"] = result["grlo_jax"]["tok_per_s"] / result["transformers"]["tok_per_s"]
    if a.tunix_python:
      common.log("tunix ...")
      result["tunix"] = bench_tunix(a.tunix_python, path, ids_bp, a.new_tokens, a.repeats)
      if "tok_per_s" in result["tunix"]:
        result["ratio_vs_tunix"] = result["grlo_jax"]["tok_per_s"] / result["tunix"]["tok_per_s"]
  print(json.dumps(result))


if __name__ == "__main__":
  main()
