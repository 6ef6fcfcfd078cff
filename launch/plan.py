r"""Per-device memory of a config's RL step on a mesh, without compiling it (grlo_jax/plan.py).

  python launch/plan.py --config=configs/grlo.py --mesh=fsdp=16 --hbm_gib=95
  python launch/plan.py --config=configs/grlo.py --devices=64 --hbm_gib=95 --config.mesh.data=4
  python launch/plan.py --config=configs/grlo.py:tiny --mesh=fsdp=8 --config.actor.micro_batch_size=2
  python launch/plan.py --config=configs/grlo.py --mesh=fsdp=4,tensor=2 --lower=tpu     # or cuda
  python launch/plan.py --config=configs/grlo.py --compile_for=v5p:2x2x4                # needs libtpu

Prints a table (GiB per device by component and by phase), then one JSON line with the same figures
in bytes. `--mesh` gives the axes' sizes (`data`, `fsdp`, `tensor`; unnamed axes are 1); without it
the config's `mesh.*` are used, `-1` resolved against `--devices` and `mesh.dcn_data` folded into
`data`. With `--hbm_gib`, it also says whether the step fits and the largest
`actor.micro_batch_size` that does (0: none; the rollout or the reward phase alone is too large).

`--lower=tpu|cuda` exports the step for that platform instead (jax.export over an abstract mesh of
`--mesh`; grlo_jax/lowering.py) and reports: lowered or the first error and its source line, the
kernels' custom calls (a kernel that `model.attention` asks for and that is missing fails the
command), host callbacks, float64, dynamic shapes, the matrix products' dtypes, the module's size
and the time to lower. `--compile_for=TOPOLOGY` (e.g. v5p:2x2x4, v5e:4x4, v6e:2x2) compiles the
step with the TPU compiler (`pip install -r requirements-tpu.txt`, no TPU needed) over fsdp on all
the topology's chips (or `--mesh`), and reports bytes a chip beside the planner's, the fit in the
chip's HBM, the collectives by kind and phase, and the compile time. `--recipe_shape` first turns on
configs/grlo.py's packing, rollout engine, bfloat16 and remat in a small preset (`:tiny`). Exit
status 1 when the step does not lower, misses a kernel, or does not fit.
"""

import json
import math
import os
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from grlo_jax import lowering, plan

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
_LOWER = flags.DEFINE_enum("lower", None, list(lowering.PLATFORMS), "Export the step for this platform and "
                           "report what lowered (grlo_jax/lowering.py) instead of planning.")
_COMPILE_FOR = flags.DEFINE_string("compile_for", None, "Compile the step for this TPU topology (e.g. "
                                   "v5p:2x2x4) with libtpu and report its memory a chip beside the plan.")
_RECIPE_SHAPE = flags.DEFINE_bool("recipe_shape", False, "Turn on the recipe's packing, rollout engine, "
                                  "bfloat16 and remat in a small preset first (lowering.recipe_shaped).")
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


def _estimate(c, shape, backend: str) -> plan.Plan:
  try:
    estimate = plan.estimate_packed if c.actor.use_dynamic_bsz else plan.estimate
    return estimate(c, shape, unroll_decode=_UNROLL.value, backend=backend)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def _lower(c) -> None:
  shape = _mesh_shape(c)
  r = lowering.lower_for(c, shape, _LOWER.value)
  print(lowering.format_lowering(r))
  print(json.dumps({"lower": r.to_dict()}))
  if not r.ok or r.missing_kernel:
    sys.exit(1)


def _compile_for(c) -> None:
  # Compiling needs no TPU: another process on this host holding libtpu's lockfile must not stop it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  shape = _mesh_shape(c) if _MESH.value else None
  m = lowering.compile_for(c, _COMPILE_FOR.value, shape)
  planned = _estimate(c, m.mesh, "tpu").total
  print(lowering.format_compiled(m, planned))
  print(json.dumps({"compiled": m.to_dict(), "planned_peak_bytes": planned}))
  if not m.fits():
    sys.exit(1)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  c = _CONFIG.value
  if _RECIPE_SHAPE.value:
    c = lowering.recipe_shaped(c)
  if _LOWER.value and _COMPILE_FOR.value:
    raise app.UsageError("--lower and --compile_for: one at a time")
  if _LOWER.value:
    return _lower(c)
  if _COMPILE_FOR.value:
    return _compile_for(c)
  shape = _mesh_shape(c)
  p = _estimate(c, shape, _BACKEND.value)
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
