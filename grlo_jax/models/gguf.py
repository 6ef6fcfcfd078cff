"""GGUF (llama.cpp) interop: a `.gguf` file -> ModelConfig + parameters, with the `gguf` package.

  cfg = config_from_gguf(path)                 # dimensions from the file's metadata
  reader = GGUFTensorReader(path)              # tensors by their HF names, dequantised on the host

`GGUFTensorReader` has the interface of `hf.SafetensorsReader` (`keys()`, `get(hf_key)`), so that
loading goes through the same name table and layout changes as an HF folder: each tensor is read
from the memory-mapped file, dequantised with gguf's numpy code (no torch), and laid out as the
HF tensor it came from. llama.cpp stores Llama's q/k projections with the rows of each head
interleaved for its rotary layout (`convert_hf_to_gguf.py`'s `LlamaModel.permute`); that is
undone here, as transformers' own GGUF loader does. Qwen3 files are stored unpermuted.

Architectures: llama, qwen3 (dense). Tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
Q4_K, Q5_K, Q6_K (`SUPPORTED_TYPES`); F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are written and read back in
the tests, Q4_K / Q6_K against transformers' independent dequantiser. Anything else fails naming
the tensor and its type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from etils import epath

from grlo_jax.models.config import ModelConfig

ARCHITECTURES = ("llama", "qwen3")
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K",
                   "Q6_K")

# llama.cpp tensor name -> HF name ("{i}" is the layer).
_TOP_LEVEL = {"token_embd.weight": "model.embed_tokens.weight",
              "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_PER_LAYER = {"attn_norm.weight": "input_layernorm.weight",
              "attn_q.weight": "self_attn.q_proj.weight",
              "attn_k.weight": "self_attn.k_proj.weight",
              "attn_v.weight": "self_attn.v_proj.weight",
              "attn_output.weight": "self_attn.o_proj.weight",
              "attn_q_norm.weight": "self_attn.q_norm.weight",
              "attn_k_norm.weight": "self_attn.k_norm.weight",
              "ffn_norm.weight": "post_attention_layernorm.weight",
              "ffn_gate.weight": "mlp.gate_proj.weight",
              "ffn_up.weight": "mlp.up_proj.weight",
              "ffn_down.weight": "mlp.down_proj.weight"}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(.+)")


def find_gguf(path: epath.PathLike) -> epath.Path | None:
  """`path` itself when it is a `.gguf` file; the one `.gguf` in a folder; else None.

  A folder with several `.gguf` files is an error naming them (pick one by its file path).
  """
  path = epath.Path(path)
  if path.suffix == ".gguf" and path.is_file():
    return path
  if not path.is_dir():
    return None
  found = sorted(path.glob("*.gguf"))
  if len(found) > 1:
    raise ValueError(f"{path}: several GGUF files ({', '.join(p.name for p in found)}); "
                     "give the file's path")
  return found[0] if found else None


def _local(path: epath.PathLike) -> str:
  path = os.fspath(path)
  if path.startswith("gs://"):
    raise ValueError(f"{path}: GGUF files are memory-mapped and must be local; copy it first")
  return path


def open_reader(path: epath.PathLike) -> Any:
  """gguf's GGUFReader over the file (memory-mapped, read-only)."""
  import gguf  # lazy: only GGUF files need it

  try:
    return gguf.GGUFReader(_local(path), "r")
  except (ValueError, OSError) as e:
    raise ValueError(f"{path}: not a readable GGUF file ({e})") from e


def metadata(reader: Any, keys: Iterable[str] | None = None) -> dict[str, Any]:
  """The file's key/value metadata (arrays as lists), except the tokenizer's big arrays."""
  out = {}
  for key, field in reader.fields.items():
    if keys is not None and key not in keys:
      continue
    if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
               "tokenizer.ggml.scores") and keys is None:
      continue
    out[key] = field.contents()
  return out


def config_from_gguf(path: epath.PathLike, *, reader: Any = None, **overrides: Any) -> ModelConfig:
  """ModelConfig from a GGUF file's metadata (llama.cpp's `{arch}.*` keys)."""
  reader = reader if reader is not None else open_reader(path)
  meta = metadata(reader)
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise ValueError(f"{path}: unsupported GGUF architecture {arch!r}; supported: "
                     f"{', '.join(ARCHITECTURES)}")

  def get(key: str, default: Any = None, kind: type = int) -> Any:
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise ValueError(f"{path}: metadata key {arch}.{key} is missing")
    if isinstance(value, list):
      raise ValueError(f"{path}: metadata key {arch}.{key} is per-layer ({value[:4]}...); only "
                       "uniform layers are supported")
    return kind(value)

  scaling = meta.get(f"{arch}.rope.scaling.type", "none")
  if scaling not in ("none", "linear") or (scaling == "linear" and
                                            meta.get(f"{arch}.rope.scaling.factor", 1.0) != 1.0):
    raise ValueError(f"{path}: rope scaling {scaling!r} ({arch}.rope.scaling.type) is not supported")
  names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in names:
    raise ValueError(f"{path}: tensor rope_freqs.weight (Llama-3 rope frequency scaling) is not "
                     "supported")
  for flag in ("attn_q.bias", "attn_k.bias", "attn_v.bias"):
    if f"blk.0.{flag}" in names:
      raise ValueError(f"{path}: tensor blk.0.{flag}: attention biases are not supported")
  d, n = get("embedding_length"), get("attention.head_count")
  head_dim = meta.get(f"{arch}.attention.key_length") or meta.get(f"{arch}.rope.dimension_count") or d // n
  embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
  if embed is None:
    raise ValueError(f"{path}: no token_embd.weight tensor")
  vocab = meta.get(f"{arch}.vocab_size") or int(embed.shape[-1])  # ggml shapes are [in, out]
  tok = lambda k: meta.get(f"tokenizer.ggml.{k}")
  cfg = ModelConfig(
      vocab_size=int(vocab), hidden_size=d, intermediate_size=get("feed_forward_length"),
      num_layers=get("block_count"), num_heads=n, num_kv_heads=get("attention.head_count_kv", n),
      head_dim=int(head_dim), family=arch, head="lm",
      rope_theta=get("rope.freq_base", 10000.0, float),
      rms_norm_eps=get("attention.layer_norm_rms_epsilon", 1e-6, float), qk_norm=arch == "qwen3",
      tie_word_embeddings="output.weight" not in names,
      max_position_embeddings=get("context_length", 4096),
      pad_token_id=tok("padding_token_id"), bos_token_id=tok("bos_token_id"),
      eos_token_id=tok("eos_token_id"))
  return cfg.replace(**overrides)


class GGUFTensorReader:
  """Reads a GGUF file's tensors by their HF names, as float32 HF-layout arrays, one at a time."""

  def __init__(self, path: epath.PathLike, cfg: ModelConfig | None = None, *, reader: Any = None):
    self.path = str(path)
    self._reader = reader if reader is not None else open_reader(path)
    self.cfg = cfg if cfg is not None else config_from_gguf(path, reader=self._reader)
    self._tensors: dict[str, Any] = {}
    unknown = []
    for t in self._reader.tensors:
      hf_name = _hf_name(t.name)
      if hf_name is None:
        unknown.append(t.name)
      else:
        self._tensors[hf_name] = t
    if unknown:
      raise ValueError(f"{self.path}: tensors with no {self.cfg.family} counterpart: {unknown[:10]}")

  def keys(self) -> set[str]:
    return set(self._tensors)

  def gguf_name(self, key: str) -> str:
    return self._tensors[key].name

  def get(self, key: str) -> np.ndarray:
    t = self._tensors[key]
    type_name = t.tensor_type.name
    if type_name not in SUPPORTED_TYPES:
      raise ValueError(f"{self.path}: tensor {t.name} has quantisation type {type_name}, which is not "
                       f"supported (supported: {', '.join(SUPPORTED_TYPES)})")
    from gguf import quants  # lazy

    # ggml lists dimensions fastest-first; numpy (and HF) slowest-first.
    shape = tuple(int(s) for s in reversed(t.shape))
    w = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    if self.cfg.family == "llama":
      if key.endswith("self_attn.q_proj.weight"):
        w = unpermute_rotary(w, self.cfg.num_heads)
      elif key.endswith("self_attn.k_proj.weight"):
        w = unpermute_rotary(w, self.cfg.num_kv_heads)
    return w

  def close(self) -> None:
    self._tensors.clear()
    self._reader = None


def _hf_name(gguf_name: str) -> str | None:
  if gguf_name in _TOP_LEVEL:
    return _TOP_LEVEL[gguf_name]
  if (m := _LAYER_RE.fullmatch(gguf_name)) and m.group(2) in _PER_LAYER:
    return f"model.layers.{m.group(1)}.{_PER_LAYER[m.group(2)]}"
  return None


def unpermute_rotary(w_oi: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's `permute` of a Llama q/k projection [heads * head_dim, in].

  llama.cpp orders each head's rows as (pairs, 2) for its interleaved rotary; HF's rotate-half
  layout wants (2, pairs): swap those two axes back.
  """
  out, rest = w_oi.shape[0], w_oi.shape[1:]
  return w_oi.reshape(num_heads, out // num_heads // 2, 2, *rest).swapaxes(1, 2).reshape(w_oi.shape)

