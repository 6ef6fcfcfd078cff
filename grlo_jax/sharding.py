"""Meshes and logical-axis sharding: the only module that knows mesh axis names.

Weights and activations carry logical axis names; one rule table maps each name to a mesh axis.
A dimension whose size the mesh axis does not divide stays replicated (e.g. 4 KV heads on
tensor=8), so the same rules serve every model size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Weights: fully-sharded over `fsdp` along the model dimension, Megatron-style over `tensor`.
PARAM_RULES: dict[str, Any] = {
    "layers": None, "vocab": "tensor", "embed": "fsdp", "q_heads": "tensor", "kv_heads": "tensor",
    "head_dim": None, "mlp": "tensor", "norm": None, "classes": None,
}
# Activations: the batch over every data-parallel axis.
ACT_RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"), "seq": None, "act_embed": None, "act_heads": "tensor",
    "act_kv_heads": "tensor", "act_mlp": "tensor", "act_vocab": "tensor", "cache_seq": None,
    "cache_layers": None,
}
RULES = PARAM_RULES | ACT_RULES

Names = Sequence[str | None]


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None,
              dcn_data: int = 1) -> Mesh:
  """A (data, fsdp, tensor) mesh; one axis may be -1 to take the remaining devices.

  With `dcn_data` > 1 the devices form that many slices: `shape` is one slice's mesh (ICI) and
  the slices stack on the data axis (DCN), which then has `dcn_data x shape["data"]` entries.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = dict({"data": 1, "fsdp": -1, "tensor": 1}, **(shape or {}))
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
  if dcn_data < 1 or len(devices) % dcn_data:
    raise ValueError(f"mesh.dcn_data={dcn_data} slices do not divide {len(devices)} devices")
  per_slice = len(devices) // dcn_data
  sizes = [shape[a] for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if per_slice % known:
      raise ValueError(f"mesh {shape} does not divide {per_slice} devices")
    sizes[sizes.index(-1)] = per_slice // known
  if math.prod(sizes) != per_slice:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"{per_slice} are available" + (" a slice" if dcn_data > 1 else ""))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if dcn_data == 1:
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=axis_types, devices=devices)
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  grid = mesh_utils.create_hybrid_device_mesh(sizes, [dcn_data, 1, 1], devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def spec(names: Names, shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> P:
  """PartitionSpec for logical `names`; with `shape` and `mesh`, drops axes that do not divide."""
  axes = []
  for i, name in enumerate(names):
    axis = None if name is None else RULES[name]  # KeyError on a typo, on purpose
    if axis is not None and shape is not None and mesh is not None:
      size = math.prod(mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))
      if shape[i] % size:
        axis = None
    axes.append(axis)
  return P(*axes)


def named(mesh: Mesh, names: Names, shape: Sequence[int]) -> NamedSharding:
  return NamedSharding(mesh, spec(names, shape, mesh))


def constrain(x: jax.Array, names: Names) -> jax.Array:
  """Sharding constraint by logical names under the current mesh (`jax.set_mesh`).

  Outside any mesh (a plain single-device call) there is nothing to constrain.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, spec(names, x.shape, mesh))


def param(value: jax.Array, names: Names) -> nnx.Param:
  """A parameter tagged with logical axis names (the one place that spells the metadata)."""
  if len(names) != np.ndim(value):
    raise ValueError(f"{len(names)} logical names {tuple(names)} for a {np.ndim(value)}-d parameter")
  return nnx.Param(value, logical_axes=tuple(names))


def logical_axes(state: nnx.State) -> Any:
  """The logical names of every parameter, as a pytree shaped like `state`."""
  return jax.tree.map(lambda v: v.get_metadata()["logical_axes"], state,
                      is_leaf=lambda v: isinstance(v, nnx.Variable))


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
  """Shardings for a pytree holding nnx Variables (parameters, optimizer moments): each Variable by
  its logical axes, every other array (step counters, scalars) replicated. A prefix of `tree`."""
  def one(x):
    if isinstance(x, nnx.Variable):
      return named(mesh, x.get_metadata()["logical_axes"], x.value.shape)
    return replicated(mesh)
  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def single_device_mesh() -> Mesh:
  return make_mesh(devices=jax.devices()[:1])


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
  """Batch-major arrays: the leading axis over the data-parallel axes, the rest replicated."""
  return named(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)


def global_batch(host_batch: Mapping[str, Any], mesh: Mesh, keys: Sequence[str]) -> dict[str, jax.Array]:
  """This process's rows of `keys` -> global arrays over the data axes (every process passes
  its own rows of each global batch)."""
  out = {}
  for k in keys:
    local = host_batch[k]
    shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, shape), local, shape)
  return out


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_shards(rows: int) -> int:
  """Devices the batch axis is sharded over under the current mesh (`RULES["batch"]`),
  reduced to a divisor of `rows` (a common divisor still packs correctly, only less locally)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = RULES["batch"]
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.gcd(math.prod(mesh.shape[a] for a in axes if a in mesh.shape), rows)
