r"""Tunix (google-tunix 0.1.7) vanilla sampler throughput on an HF Qwen3 folder. Runs in Tunix's own venv.

  /tmp/tunix_env/bin/python benchmarks/tunix_sampler.py --model=HF_DIR --prompts=IDS.npy \
      --new_tokens=128 --repeats=3

Feeds the [B, P] int32 prompt ids of IDS.npy to `tunix.generate.sampler.Sampler` through a minimal
tokenizer whose "text" is the ids written as decimal strings, samples at temperature 1.0, top_p 1.0,
no top-k, with an eos id that cannot be sampled (so no early stop). One warm-up call (compiles), then
the median of --repeats. Logs go to stderr; the last stdout line is one JSON object. Must not import
grlo_jax (it runs with Tunix's pinned transformers/jax, not the project's).
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
from jax.sharding import AxisType
from tunix.generate import sampler as sampler_lib
from tunix.models.qwen3 import model as qwen3_model
from tunix.models.qwen3 import params as qwen3_params


def log(*args) -> None:
  print(*args, file=sys.stderr, flush=True)


class IdTokenizer:
  """Tokenizer adapter for ids: the text "12 7 301" encodes to [12, 7, 301]. No BOS is added
  (bos_id() is None), pad is the HF config's pad id, eos is `eos` (give one that cannot occur)."""

  def __init__(self, pad: int, eos: int):
    self._pad, self._eos = pad, eos

  def encode(self, text: str, **_) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, **_) -> str:
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return None

  def eos_id(self) -> int:
    return self._eos

  def pad_id(self) -> int:
    return self._pad


def ids_to_strings(ids_bp: np.ndarray) -> list[str]:
  return [" ".join(str(int(t)) for t in row) for row in ids_bp]


def qwen3_config(hf_dir: pathlib.Path) -> qwen3_model.ModelConfig:
  """Tunix Qwen3 ModelConfig from an HF config.json (float32). Tunix's Qwen3 ignores rope_theta."""
  c = json.loads((hf_dir / "config.json").read_text())
  return qwen3_model.ModelConfig(
      num_layers=c["num_hidden_layers"], vocab_size=c["vocab_size"], embed_dim=c["hidden_size"],
      hidden_dim=c["intermediate_size"], num_heads=c["num_attention_heads"],
      head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
      num_kv_heads=c["num_key_value_heads"], rope_theta=int(c.get("rope_theta", 1_000_000)),
      norm_eps=c["rms_norm_eps"], use_tied_embedding=bool(c.get("tie_word_embeddings", False)))


def auto_mesh() -> jax.sharding.Mesh:
  """A (1, n) fsdp x tp mesh with Auto axes: jax.make_mesh's default Explicit axes make Tunix's
  embedding gather raise a ShardingTypeError."""
  n = len(jax.devices())
  return jax.make_mesh((1, n), ("fsdp", "tp"), axis_types=(AxisType.Auto, AxisType.Auto))


def load_model(hf_dir: pathlib.Path, mesh):
  cfg = qwen3_config(hf_dir)
  # tunix 0.1.7: create_model_from_safe_tensors(file_dir, config, mesh=None, dtype=None, mode="auto")
  model = qwen3_params.create_model_from_safe_tensors(str(hf_dir), cfg, mesh=mesh, dtype=jax.numpy.float32)
  return model, cfg


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True, help="HF Qwen3 folder (config.json + *.safetensors)")
  ap.add_argument("--prompts", required=True, help=".npy of [B, P] int32 prompt ids")
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args()

  hf_dir = pathlib.Path(a.model)
  ids_bp = np.load(a.prompts).astype(np.int32)
  batch, prompt_len = ids_bp.shape
  pad_id = int(json.loads((hf_dir / "config.json").read_text()).get("pad_token_id") or 0)
  if (ids_bp == pad_id).any():
    raise SystemExit(f"prompt ids contain the pad id {pad_id}: Tunix would treat them as padding")

  mesh = auto_mesh()
  with jax.set_mesh(mesh):
    model, cfg = load_model(hf_dir, mesh)
    tok = IdTokenizer(pad=pad_id, eos=cfg.vocab_size)  # eos = vocab_size: can never be sampled
    sampler = sampler_lib.Sampler(model, tok, sampler_lib.CacheConfig(
        cache_size=prompt_len + a.new_tokens, num_layers=cfg.num_layers,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
    prompts = ids_to_strings(ids_bp)
    assert [tok.encode(p) for p in prompts] == ids_bp.tolist()
    out = {}

    def run():
      # __call__ returns host numpy tokens (device_get), so the timing includes the device work.
      out["res"] = sampler(prompts, max_generation_steps=a.new_tokens, max_prompt_length=prompt_len,
                           echo=False, temperature=1.0, top_p=1.0, top_k=None,
                           eos_tokens=[cfg.vocab_size], seed=a.seed)

    def timed():
      t0 = time.perf_counter()
      run()
      return time.perf_counter() - t0

    log(f"tunix sampler: B={batch} P={prompt_len} N={a.new_tokens} devices={jax.devices()}")
    first = timed()
    times = [timed() for _ in range(a.repeats)]
    sec = statistics.median(times)
    res = out["res"]
    tokens = int(sum(len(t) for t in res.tokens))  # generated tokens, not loop steps
    padded = np.asarray(res.padded_prompt_tokens)
    assert padded.shape == ids_bp.shape and (padded == ids_bp).all(), "prompt ids were changed"
    log(f"first call {first:.3f}s, times {[round(t, 4) for t in times]}, tokens {tokens}")

  print(json.dumps({"tok_per_s": tokens / sec, "median_s": sec, "times_s": times,
                    "compile_s": first - sec, "tokens": tokens, "batch": batch,
                    "prompt_len": prompt_len, "new_tokens": a.new_tokens,
                    "tunix_version": _version(), "jax_version": jax.__version__,
                    "device": jax.devices()[0].device_kind}))


def _version() -> str:
  try:
    from importlib import metadata
    return metadata.version("google-tunix")
  except Exception:  # pylint: disable=broad-except
    return "unknown"


if __name__ == "__main__":
  main()
