r"""Per-device memory of a config's RL step on a mesh, without compiling it (grlo_jax/plan.py).

  python launch/plan.py --config=configs/grlo.py --mesh=fsdp=16 --hbm_gib=95
  python launch/plan.py --config=configs/grlo.py --devices=64 --hbm_gib=95 --config.mesh.data=4
  python launch/plan.py --config=configs/grlo.py:tiny --mesh=fsdp=8 --config.actor.micro_batch_size=2

Prints a table (GiB per device by component and by phase), then one JSON line with the same figures
in bytes. `--mesh` gives the axes' sizes (`data`, `fsdp`, `tensor`; unnamed axes are 1); without it
the config's `mesh.*` are used, `-1` resolved against `--devices` and `mesh.dcn_data` folded into
`data`. With `--hbm_gib`, it also says whether the step fits and the largest
`actor.micro_batch_size` that does (0: none; the rollout or the reward phase alone is too large).
"""

import json
import math
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from grlo_jax import plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/grlo.py:tiny.",
                                          lock_config=True)
_MESH = flags.DEFINE_string("mesh", None, "Mesh sizes, e.g. fsdp=16 or data=4,fsdp=16,tensor=1 (-1: the "
                            "rest of --devices); default: the config's mesh.")
_DEVICES = flags.DEFINE_integer("devices", None, "Devices (chips) in all, to resolve a -1 mesh size.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "Memory per device in GiB: report fit and suggest "
                              "actor.micro_batch_size.")
_MARGIN = flags.DEFINE_float("margin", 0.9, "Fraction of --hbm_gib the step may use.")
_UNROLL = flags.DEFINE_bool("unroll_decode", False, "Count XLA:CPU's per-layer decode (weights copied per layer).")
_BACKEND = flags.DEFINE_enum("backend", "tpu", ["cpu", "gpu", "tpu"], "The platform planned for: what "
                             "model.attention=auto runs there (fused kernels on TPU and GPU, dense or "
                             "chunked by length on CPU).")
flags.mark_flags_as_required(["config"])


def _mesh_shape(c) -> dict[str, int]:
  if _MESH.value:
    shape = {}
    for part in _MESH.value.split(","):
      axis, _, size = part.partition("=")
      if not size:
        raise app.UsageError(f"--mesh wants axis=size pairs, got {part!r}")
      shape[axis.strip()] = int(size)
  else:
    shape = {"data": c.mesh.data * c.mesh.dcn_data if c.mesh.data != -1 else -1, "fsdp": c.mesh.fsdp,
             "tensor": c.mesh.tensor}
  if -1 in shape.values():
    if not _DEVICES.value:
      raise app.UsageError(f"mesh {shape} has a -1 size: give --devices")
    known = math.prod(v for v in shape.values() if v != -1)
    if _DEVICES.value % known:
      raise app.UsageError(f"mesh {shape} does not divide --devices={_DEVICES.value}")
    shape = {k: (_DEVICES.value // known if v == -1 else v) for k, v in shape.items()}
  if _DEVICES.value and math.prod(shape.values()) != _DEVICES.value:
    raise app.UsageError(f"mesh {shape} has {math.prod(shape.values())} devices, --devices={_DEVICES.value}")
  return shape


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  c = _CONFIG.value
  shape = _mesh_shape(c)
  try:
    estimate = plan.estimate_packed if c.actor.use_dynamic_bsz else plan.estimate
    p = estimate(c, shape, unroll_decode=_UNROLL.value, backend=_BACKEND.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  hbm = None if _HBM_GIB.value is None else _HBM_GIB.value * plan.GiB
  out = p.to_dict()
  table = plan.format_table(p, hbm_bytes=hbm, margin=_MARGIN.value)
  if hbm is not None:
    suggested = plan.suggest_micro_batch(c, shape, hbm, margin=_MARGIN.value, unroll_decode=_UNROLL.value,
                                         backend=_BACKEND.value)
    out |= {"hbm_bytes": int(hbm), "margin": _MARGIN.value, "fits": p.fits(hbm, _MARGIN.value),
            "suggested_micro_batch_size": suggested}
    table += f"\nlargest actor.micro_batch_size that fits: {suggested or 'none'}"
  print(table)
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
