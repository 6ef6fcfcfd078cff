"""Hugging Face interop: `config.json` <-> ModelConfig, safetensors <-> parameters.

One table maps each parameter to its HF key and the layout change between them; loading reads
one HF tensor at a time and places each parameter straight onto its target sharding.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_dtypes
import numpy as np
from etils import epath
from safetensors import safe_open
from safetensors.numpy import save_file

from grlo_jax.models.config import ModelConfig
from grlo_jax.models.transformer import block_shapes

# architecture -> (family, head)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "Qwen3ForCausalLM": ("qwen3", "lm"),
    "Qwen3ForSequenceClassification": ("qwen3", "score"),
    "Qwen3ForTokenClassification": ("qwen3", "value"),
    "LlamaForCausalLM": ("llama", "lm"),
    "LlamaForSequenceClassification": ("llama", "score"),
    "LlamaForTokenClassification": ("llama", "value"),
}
_HEAD_SUFFIX = {"lm": "ForCausalLM", "score": "ForSequenceClassification", "value": "ForTokenClassification"}
_FAMILY_PREFIX = {"qwen3": "Qwen3", "llama": "Llama"}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --- config.json ---------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], *, source: str = "config.json", **overrides: Any) -> ModelConfig:
  """ModelConfig from a parsed HF `config.json` (transformers 4.x or 5.x rope fields)."""
  archs = hf.get("architectures") or []
  arch = next((a for a in archs if a in ARCHITECTURES), None)
  if arch is None:
    raise ValueError(f"{source}: unsupported architecture {archs or hf.get('model_type')!r}; "
                     f"supported: {sorted(ARCHITECTURES)}")
  family, head = ARCHITECTURES[arch]
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise ValueError(f"{source}: {flag}=true is not supported")
  if hf.get("use_sliding_window"):
    raise ValueError(f"{source}: use_sliding_window=true is not supported")
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "llama3"):
    raise ValueError(f"{source}: rope type {rope_type!r} is not supported (default, llama3)")
  llama3 = None
  if rope_type == "llama3":
    llama3 = {k: float(rope[k]) for k in
              ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
  n = hf["num_attention_heads"]
  # transformers omits id2label when it is its default of two labels.
  num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
  if head == "value" and num_labels != 1:
    raise ValueError(f"{source}: a value head needs num_labels=1, got {num_labels}")
  cfg = ModelConfig(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=n, num_kv_heads=hf.get("num_key_value_heads") or n,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // n, family=family, head=head,
      num_labels=num_labels, rope_theta=float(theta), rope_llama3=llama3,
      rms_norm_eps=hf.get("rms_norm_eps", 1e-6), qk_norm=family == "qwen3",
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=hf.get("max_position_embeddings", 40960),
      pad_token_id=hf.get("pad_token_id"), bos_token_id=hf.get("bos_token_id"),
      eos_token_id=hf.get("eos_token_id"))
  return cfg.replace(**overrides)


def config_to_hf(cfg: ModelConfig) -> Any:
  """A transformers config object that `AutoModelFor*.from_pretrained` accepts."""
  import transformers  # heavy; only export needs it

  kind = "Qwen3Config" if cfg.family == "qwen3" else "LlamaConfig"
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_llama3 is not None:
    rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **dict(cfg.rope_llama3)}
  hf = getattr(transformers, kind)(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
      rope_parameters=rope, tie_word_embeddings=cfg.tie_word_embeddings,
      max_position_embeddings=cfg.max_position_embeddings, pad_token_id=cfg.pad_token_id,
      bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
      num_labels=cfg.num_labels, torch_dtype=cfg.param_dtype)
  hf.architectures = [_FAMILY_PREFIX[cfg.family] + _HEAD_SUFFIX[cfg.head]]
  return hf


# --- the name table -----------------------------------------------------------------------

# Per-layer weights: our name -> (HF key below model.layers.{i}., HF -> ours, ours -> HF).
# HF linear weights are [out, in]; ours are [in, out] with heads split out.
def _proj_in(w, shape):  # [out, in] -> [in, *out]
  return w.T.reshape(shape)


def _proj_in_back(w):  # [in, *out] -> [out, in]
  return w.reshape(w.shape[0], -1).T


def _proj_out(w, shape):  # [out, *in] from HF [out, in]: o_proj [D, N*H] -> [N, H, D]
  return w.T.reshape(shape)


def _proj_out_back(w):  # [N, H, D] -> [D, N*H]
  return w.reshape(-1, w.shape[-1]).T


def _same(w, shape):
  return w.reshape(shape)


def _same_back(w):
  return w


_BLOCK_KEYS: dict[str, tuple[str, Callable, Callable]] = {
    "attn_norm_d": ("input_layernorm.weight", _same, _same_back),
    "wq_dnh": ("self_attn.q_proj.weight", _proj_in, _proj_in_back),
    "wk_dkh": ("self_attn.k_proj.weight", _proj_in, _proj_in_back),
    "wv_dkh": ("self_attn.v_proj.weight", _proj_in, _proj_in_back),
    "wo_nhd": ("self_attn.o_proj.weight", _proj_out, _proj_out_back),
    "q_norm_h": ("self_attn.q_norm.weight", _same, _same_back),
    "k_norm_h": ("self_attn.k_norm.weight", _same, _same_back),
    "mlp_norm_d": ("post_attention_layernorm.weight", _same, _same_back),
    "wg_df": ("mlp.gate_proj.weight", _proj_in, _proj_in_back),
    "wu_df": ("mlp.up_proj.weight", _proj_in, _proj_in_back),
    "wd_fd": ("mlp.down_proj.weight", _proj_in, _proj_in_back),
}


def top_level_keys(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
  """Non-layer parameters of `cfg`: our path -> (HF key, HF -> ours, ours -> HF)."""
  keys = {"embed_vd": ("model.embed_tokens.weight", _same, _same_back),
          "final_norm_d": ("model.norm.weight", _same, _same_back)}
  if cfg.head == "lm" and not cfg.tie_word_embeddings:
    keys["lm_head_dv"] = ("lm_head.weight", _proj_in, _proj_in_back)
  elif cfg.head == "value":
    keys["value_d"] = ("score.weight", _same, lambda w: w.reshape(1, -1))
    keys["value_bias"] = ("score.bias", _same, lambda w: w.reshape(1))
  elif cfg.head == "score":
    keys["score_dc"] = ("score.weight", _proj_in, _proj_in_back)
  return keys


def expected_hf_keys(cfg: ModelConfig) -> set[str]:
  keys = {k for k, _, _ in top_level_keys(cfg).values()}
  for name in block_shapes(cfg):
    keys |= {f"model.layers.{i}.{_BLOCK_KEYS[name][0]}" for i in range(cfg.num_layers)}
  return keys


# --- reading ------------------------------------------------------------------------------


class SafetensorsReader:
  """Reads named tensors from a folder of (sharded) safetensors, one tensor at a time."""

  def __init__(self, path: epath.PathLike):
    self.path = epath.Path(path)
    index = self.path / "model.safetensors.index.json"
    if index.exists():
      weight_map = json.loads(index.read_text())["weight_map"]
    else:
      files = sorted(p.name for p in self.path.glob("*.safetensors"))
      if not files:
        raise FileNotFoundError(f"{self.path}: no *.safetensors files")
      weight_map = {}
      for name in files:
        with self._open(name) as f:
          weight_map.update({k: name for k in f.keys()})
    self.weight_map: dict[str, str] = weight_map
    self._local: dict[str, str] = {}

  @contextlib.contextmanager
  def _open(self, file: str) -> Iterator[Any]:
    src = self.path / file
    if str(src).startswith("gs://"):  # safe_open needs a local file: stage each shard on disk
      if file not in self._local:
        fd, local = tempfile.mkstemp(suffix=".safetensors")
        os.close(fd)
        with src.open("rb") as r, open(local, "wb") as w:
          shutil.copyfileobj(r, w, 64 << 20)
        self._local[file] = local
      src = self._local[file]
    with safe_open(str(src), framework="numpy") as f:
      yield f

  def keys(self) -> set[str]:
    return set(self.weight_map)

  def get(self, key: str) -> np.ndarray:
    with self._open(self.weight_map[key]) as f:
      return f.get_tensor(key)

  def close(self) -> None:
    for local in self._local.values():
      os.remove(local)
    self._local.clear()


def check_keys(cfg: ModelConfig, present: set[str], source: str) -> None:
  """Raise naming every missing or unexpected tensor."""
  want = expected_hf_keys(cfg)
  present = {k for k in present if not k.endswith(_IGNORED_SUFFIXES)}
  if cfg.head == "lm" and cfg.tie_word_embeddings:
    present.discard("lm_head.weight")  # some exporters write the tied copy too
  missing, unexpected = sorted(want - present), sorted(present - want)
  if missing or unexpected:
    raise ValueError(f"{source}: tensors do not match the {cfg.family} {cfg.head} model: "
                     f"missing {missing[:20]}{' ...' if len(missing) > 20 else ''}, "
                     f"unexpected {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")


def _checked(key: str, w: np.ndarray, want: tuple[int, ...], to_ours: Callable) -> np.ndarray:
  try:
    out = to_ours(w, want)
  except ValueError:
    out = None
  if out is None or out.shape != want:
    raise ValueError(f"tensor {key}: shape {tuple(w.shape)} does not fit parameter shape {want}")
  return out


def read_param(reader: SafetensorsReader, cfg: ModelConfig, path: str, shape: tuple[int, ...],
               dtype: np.dtype) -> np.ndarray:
  """One parameter (our path, e.g. "blocks/wq_dnh") as a host array of `shape`, from HF tensors."""
  if path.startswith("blocks/"):
    name = path.split("/", 1)[1]
    hf_suffix, to_ours, _ = _BLOCK_KEYS[name]
    out = np.empty(shape, dtype)
    for i in range(cfg.num_layers):  # one layer's tensor in memory at a time
      key = f"model.layers.{i}.{hf_suffix}"
      out[i] = _checked(key, reader.get(key), shape[1:], to_ours).astype(dtype)
    return out
  key, to_ours, _ = top_level_keys(cfg)[path]
  return _checked(key, reader.get(key), shape, to_ours).astype(dtype)


# --- writing ------------------------------------------------------------------------------


def to_hf_tensors(cfg: ModelConfig, params: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
  """(HF key, array) for every parameter, from our flat {path: host array} dict."""
  for path, (key, _, to_hf) in top_level_keys(cfg).items():
    yield key, np.ascontiguousarray(to_hf(params[path]))
  for name in block_shapes(cfg):
    hf_suffix, _, to_hf = _BLOCK_KEYS[name]
    for i in range(cfg.num_layers):
      yield f"model.layers.{i}.{hf_suffix}", np.ascontiguousarray(to_hf(params[f"blocks/{name}"][i]))


def write_hf(cfg: ModelConfig, params: dict[str, np.ndarray], dst: epath.PathLike,
             max_shard_bytes: int = 4 << 30) -> None:
  """Write `config.json` and (sharded) `model*.safetensors` that transformers loads."""
  dst = epath.Path(dst)
  dst.mkdir(parents=True, exist_ok=True)
  (dst / "config.json").write_text(config_to_hf(cfg).to_json_string())
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for key, w in to_hf_tensors(cfg, params):
    if size and size + w.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][key] = w
    size += w.nbytes
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map = {}
  for name, shard in zip(names, shards):
    with tempfile.TemporaryDirectory() as tmp:  # save_file needs a local path; dst may be gs://
      save_file(shard, os.path.join(tmp, name), metadata={"format": "pt"})
      with open(os.path.join(tmp, name), "rb") as r, (dst / name).open("wb") as w:
        shutil.copyfileobj(r, w, 64 << 20)
    weight_map.update({k: name for k in shard})
  if len(shards) > 1:
    total = sum(w.nbytes for s in shards for w in s.values())
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def host_dtype(dtype: Any) -> np.dtype:
  return np.dtype(ml_dtypes.bfloat16) if str(dtype) == "bfloat16" else np.dtype(dtype)


def jax_array(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """Place a host array on `sharding`, each device taking only its slice."""
  return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])
