"""Build, load and save models: HF folders and Orbax model checkpoints alike."""

from __future__ import annotations

import json
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx, traverse_util
from jax.sharding import Mesh

from grlo_jax import sharding
from grlo_jax.models import gguf, hf
from grlo_jax.models.config import ModelConfig
from grlo_jax.models.transformer import Transformer

ORBAX_CONFIG = "model_config.json"  # beside `params/` in an Orbax model folder
ORBAX_PARAMS = "params"


def _mesh_or_single(mesh: Mesh | None) -> Mesh:
  return mesh if mesh is not None else sharding.single_device_mesh()


def abstract(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and shape-only state of a model; nothing is allocated."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))


def init_model(cfg: ModelConfig, seed: int = 0, mesh: Mesh | None = None) -> Transformer:
  """A randomly initialised model (norms 1, biases 0, other weights N(0, 0.02)), each parameter
  drawn on the host from (seed, name) and placed straight onto its sharding.

  Host numpy, not a jitted init: XLA's CPU compile of threefry sampling costs seconds per
  model, and every process of a multi-host job draws the same values without communicating.
  """
  mesh = _mesh_or_single(mesh)
  graphdef, abs_state = abstract(cfg)
  shardings = traverse_util.flatten_dict(nnx.to_pure_dict(sharding.tree_shardings(abs_state, mesh)), sep="/")
  values = {}
  for name, var in traverse_util.flatten_dict(nnx.to_pure_dict(abs_state), sep="/").items():
    host = _random_param(name, var.shape, hf.host_dtype(var.dtype), seed)
    values[name] = hf.jax_array(host, shardings[name])
  nnx.replace_by_pure_dict(abs_state, traverse_util.unflatten_dict(values, sep="/"))
  return nnx.merge(graphdef, abs_state)


def _random_param(name: str, shape: tuple[int, ...], dtype: np.dtype, seed: int) -> np.ndarray:
  leaf = name.rsplit("/", 1)[-1]
  if "norm" in leaf:
    return np.ones(shape, dtype)
  if leaf == "value_bias":
    return np.zeros(shape, dtype)
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  return (rng.standard_normal(shape, np.float32) * 0.02).astype(dtype)


def load_pretrained(path: epath.PathLike, dtype: Any = "float32", mesh: Mesh | None = None, *,
                    compute_dtype: Any = None, attention: str = "auto", **overrides: Any) -> Transformer:
  """Load an HF folder (config.json + safetensors), a GGUF file (or a folder holding one; weights
  dequantised, see `grlo_jax.models.gguf`) or an Orbax model folder.

  `dtype` is the weights' storage dtype; `compute_dtype` (default: `dtype`) the activations'.
  `attention`: the full-sequence attention implementation (`grlo_jax.models.attention`).
  Each parameter goes straight onto its sharding on `mesh` (one device when None).
  `overrides` replace ModelConfig fields (e.g. `remat=True`); `head="value"` on a causal-LM folder
  gives a critic: the base model's weights with a new value head.
  """
  path = epath.Path(path)
  mesh = _mesh_or_single(mesh)
  dtype = str(np.dtype(hf.host_dtype(dtype)))
  overrides = dict(param_dtype=dtype, dtype=str(compute_dtype or dtype), attention=attention, **overrides)
  if (path / ORBAX_CONFIG).exists():
    cfg = ModelConfig.from_dict(json.loads((path / ORBAX_CONFIG).read_text()))
    return _load_orbax(cfg, path / ORBAX_PARAMS, mesh, overrides)
  from grlo_jax import checkpoint  # lazy: checkpoint imports the train state
  # A training workdir or step folder (before config.json: a workdir's is the run's record).
  if (found := checkpoint.policy_folder(path)) is not None:
    return _load_orbax(*found, mesh, overrides)
  if (path / "config.json").exists():
    return _load_hf(path, mesh, overrides)
  if (gguf_file := gguf.find_gguf(path)) is not None:
    return _load_gguf(gguf_file, mesh, overrides)
  raise FileNotFoundError(f"{path}: neither an HF model folder (config.json), a GGUF file, an Orbax "
                          f"model folder ({ORBAX_CONFIG}), nor a training checkpoint (checkpoints/<step>/)")


HEAD_PARAMS = ("lm_head_dv", "value_d", "value_bias", "score_dc")


def _load_hf(path: epath.Path, mesh: Mesh, overrides: dict[str, Any]) -> Transformer:
  file_cfg = hf.config_from_hf(json.loads((path / "config.json").read_text()), source=str(path / "config.json"))
  return _load_tensors(file_cfg, hf.SafetensorsReader(path), str(path), mesh, overrides)


def _load_gguf(path: epath.Path, mesh: Mesh, overrides: dict[str, Any]) -> Transformer:
  reader = gguf.GGUFTensorReader(path)
  return _load_tensors(reader.cfg, reader, str(path), mesh, overrides)


def _load_tensors(file_cfg: ModelConfig, reader: Any, source: str, mesh: Mesh,
                  overrides: dict[str, Any]) -> Transformer:
  """Parameters from a reader of HF-named tensors (safetensors or GGUF), one at a time."""
  cfg = file_cfg.replace(**overrides)
  new_head = cfg.head != file_cfg.head  # e.g. head="value": a critic from the base model
  try:
    hf.check_keys(file_cfg, reader.keys(), source)
    graphdef, abs_state = abstract(cfg)
    shardings = traverse_util.flatten_dict(nnx.to_pure_dict(sharding.tree_shardings(abs_state, mesh)),
                                           sep="/")
    values = {}
    for name, var in traverse_util.flatten_dict(nnx.to_pure_dict(abs_state), sep="/").items():
      dtype = hf.host_dtype(var.dtype)
      if new_head and name in HEAD_PARAMS:
        host = _random_param(name, var.shape, dtype, seed=0)
      else:
        host = hf.read_param(reader, cfg, name, var.shape, dtype)
      values[name] = hf.jax_array(host, shardings[name])
      del host  # one parameter on the host at a time
  finally:
    reader.close()
  nnx.replace_by_pure_dict(abs_state, traverse_util.unflatten_dict(values, sep="/"))
  return nnx.merge(graphdef, abs_state)


def _load_orbax(cfg: ModelConfig, params_dir: epath.Path, mesh: Mesh, overrides: dict[str, Any]) -> Transformer:
  """The stored parameters; with another `head` than stored, the backbone with a new head: a
  reward model's score head becomes a critic's value head (`value_d` = the score column, bias 0,
  as OpenRLHF initialises a critic from its RM), any other new head is drawn at random."""
  stored_cfg = cfg.replace(**{k: v for k, v in overrides.items() if k not in ("head", "num_labels")})
  cfg = cfg.replace(**overrides)
  new_head = (cfg.head, cfg.num_labels) != (stored_cfg.head, stored_cfg.num_labels)
  graphdef, abs_state = abstract(cfg)
  _, stored_state = abstract(stored_cfg) if new_head else (None, abs_state)
  target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                        nnx.to_pure_dict(stored_state),
                        nnx.to_pure_dict(sharding.tree_shardings(stored_state, mesh)))
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(params_dir.resolve(), target)
  if new_head:
    shardings = nnx.to_pure_dict(sharding.tree_shardings(abs_state, mesh))
    old_heads = {name: restored.pop(name) for name in HEAD_PARAMS if name in restored}
    for name, var in nnx.to_pure_dict(abs_state).items():
      if name in HEAD_PARAMS:
        dtype = hf.host_dtype(var.dtype)
        if name == "value_d" and "score_dc" in old_heads:
          host = np.asarray(jax.device_get(old_heads["score_dc"]))[:, 0].astype(dtype)
        else:
          host = _random_param(name, var.shape, dtype, seed=0)
        restored[name] = hf.jax_array(host, shardings[name])
  nnx.replace_by_pure_dict(abs_state, restored)
  return nnx.merge(graphdef, abs_state)


def host_params(model: Transformer) -> dict[str, np.ndarray]:
  """Every parameter as a host array, keyed "blocks/wq_dnh" etc."""
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)), sep="/")
  return {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}


def save_orbax(model: Transformer, dst: epath.PathLike) -> None:
  """Write an Orbax model folder: `model_config.json` + `params/`."""
  dst = epath.Path(dst)
  dst.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save((dst / ORBAX_PARAMS).resolve(), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  (dst / ORBAX_CONFIG).write_text(json.dumps(model.cfg.to_dict(), indent=2))


def export_hf(model: Transformer, dst: epath.PathLike) -> None:
  """Write an HF folder that `transformers.AutoModelFor*.from_pretrained` loads."""
  hf.write_hf(model.cfg, host_params(model), dst)
