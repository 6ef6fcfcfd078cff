"""The RL step lowered and compiled for TPU or GPU from any host, and what its module says.

  r = lowering.lower_for(config, {"fsdp": 4, "tensor": 2}, "tpu")     # jax.export, abstract inputs
  print(lowering.format_lowering(r))
  m = lowering.compile_for(config, "v5p:2x2x4")                       # libtpu's compiler, no TPU
  print(lowering.format_compiled(m))

`lower_for` exports the config's jitted step (`build.abstract_step`) for a platform with
`jax.export` over an abstract mesh, with `model.attention=auto` resolved for that platform, and
reads the StableHLO: the kernels' custom calls, host callbacks, float64, dynamic shapes and the
dtypes of every matrix product (`audit`). Collectives exist only after XLA's SPMD partitioner, so
they come from `compile_for`: the TPU compiler of libtpu (requirements-tpu.txt) over
`jax.experimental.topologies` devices, which also gives the step's memory a chip.

The text readers (`custom_calls`, `kernel_names`, `audit`, `collectives`) are pure functions of
module text, so tests can feed them any module.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import time
import traceback
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
from jax import export
from jax.sharding import AbstractMesh, AxisType

from grlo_jax import sharding
from grlo_jax.models import attention as attention_lib
from grlo_jax.rl import build

GiB = 2**30
PLATFORMS = ("tpu", "cuda")
# The custom call each attention kernel lowers to: auto must not fall back to dense attention.
KERNEL_TARGETS = {"splash": "tpu_custom_call", "pallas_gpu": "__gpu$xla.gpu.triton", "cudnn": "__cudnn$fmha"}
# Custom calls without jax.export's compatibility guarantee that are ours on purpose: exported
# for reading, not stored.
_UNSTABLE_OK = ("__gpu$xla.gpu.triton", "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward",
                "__cudnn$fmhaMaskSoftmax", "__cudnn$fmhaMaskSoftmaxBackward")
CALLBACK = re.compile(r"callback", re.I)  # xla_python_cpu_callback, xla_ffi_python_gpu_callback, ...
# HBM a chip by TPU generation (the topology name's prefix).
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "i1": 1, "s8": 1, "u8": 1, "i8": 1, "ui8": 1, "s16": 2, "u16": 2, "i16": 2,
                "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "i32": 4, "ui32": 4, "f32": 4, "s64": 8,
                "u64": 8, "i64": 8, "ui64": 8, "f64": 8, "c64": 8, "c128": 16}


def abstract_mesh(shape: Mapping[str, int]) -> AbstractMesh:
  """A (data, fsdp, tensor) mesh of `shape`'s sizes (unnamed axes 1) without devices."""
  unknown = set(shape) - set(sharding.MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {sharding.MESH_AXES}")
  sizes = tuple(int(shape.get(a, 1)) for a in sharding.MESH_AXES)
  return AbstractMesh(sizes, sharding.MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes))


def recipe_shaped(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`c` (a small preset) with configs/grlo.py's length-aware defaults and dtypes on: packed passes,
  the rollout engine over half the responses as slots, bfloat16 compute, remat, attention auto."""
  c = ml_collections.ConfigDict(c.to_dict())
  c.actor.use_dynamic_bsz = True
  c.actor.ppo_max_token_len_per_device = max(c.actor.ppo_max_token_len_per_device,
                                             c.data.max_prompt_length + c.rollout.response_length)
  c.rollout.max_num_seqs = max(1, c.data.train_batch_size * c.rollout.n // 2)
  c.model.compute_dtype = c.model.rm_dtype = "bfloat16"
  c.model.remat = True
  c.model.attention = "auto"
  return c


# --- Readers of module text (StableHLO from jax.export, or XLA's HLO after compile). ---

def custom_calls(text: str) -> collections.Counter:
  """Custom-call targets and how often each appears."""
  stablehlo = re.findall(r"stablehlo\.custom_call @([\w$.\-]+)\(", text)
  hlo = re.findall(r'custom_call_target="([^"]+)"', text)
  return collections.Counter(stablehlo + hlo)


def kernel_names(text: str) -> collections.Counter:
  """Names of the Pallas kernels in the module (Mosaic's `kernel_name`, Triton's `name`)."""
  mosaic = re.findall(r'kernel_name = "([^"]+)"', text)
  triton = re.findall(r'__gpu\$xla\.gpu\.triton\([^)]*\)\s*\{[^\n]*?name = "([^"]+)"', text)
  return collections.Counter(mosaic + triton)


def _tensor_dtype(t: str) -> str:
  return t.rsplit("x", 1)[-1] if "x" in t else t


def audit(text: str) -> dict[str, Any]:
  """TPU-readiness of a StableHLO module: float64 values, host callbacks, dynamic (`?`) dims, and
  the matrix products by operand and result dtype ("bf16,bf16->f32": bfloat16 inputs accumulated
  in float32)."""
  types = re.findall(r"tensor<([^>]*)>", text)
  dots = collections.Counter()
  for lhs, rhs, out in re.findall(
      r"stablehlo\.dot_general [^\n]*: \(tensor<([^>]*)>, tensor<([^>]*)>\) -> tensor<([^>]*)>", text):
    dots[f"{_tensor_dtype(lhs)},{_tensor_dtype(rhs)}->{_tensor_dtype(out)}"] += 1
  return {
      "f64": sum(_tensor_dtype(t) == "f64" for t in types),
      "host_callbacks": sorted(t for t in custom_calls(text) if CALLBACK.search(t)),
      "dynamic_dims": sum("?" in t for t in types),
      "dots": dict(dots.most_common()),
  }


def _shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape like `bf16[4,128]{1,0}`."""
  m = re.match(r"(\w+)\[([\d,]*)\]", shape)
  if not m:
    return 0
  dims = [int(d) for d in m.group(2).split(",") if d]
  return math.prod(dims) * _DTYPE_BYTES.get(m.group(1), 4)


def collectives(hlo_text: str, phases: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
  """Collectives of a partitioned HLO module (`compiled.as_text()`) by kind: ops, and bytes of their
  results a device, each op once (one in a loop body runs every iteration: a layer scan's per
  layer). With `phases`, bytes also by the first of them named in the op's scope (`rl.step.PHASES`).
  """
  out = {k: {"ops": 0, "bytes": 0, "by_phase": collections.Counter()} for k in COLLECTIVES}
  pattern = re.compile(r"= (\([^=]*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?) (" + "|".join(COLLECTIVES) +
                       r")(-start)?\((.*)$", re.M)
  for shape, kind, start, rest in pattern.findall(hlo_text):
    shapes = re.findall(r"\w+\[[\d,]*\]", shape)
    # An async start's tuple holds (operands, results): count the results.
    nbytes = _shape_bytes(shapes[-1]) if start else sum(_shape_bytes(s) for s in shapes)
    out[kind]["ops"] += 1
    out[kind]["bytes"] += nbytes
    scope = re.search(r'op_name="([^"]*)"', rest)
    phase = next((p for p in phases if scope and f"/{p}/" in scope.group(1) + "/"), "other")
    out[kind]["by_phase"][phase] += nbytes
  for v in out.values():
    v["by_phase"] = dict(v["by_phase"].most_common())
  return out


# --- Lowering for a platform (jax.export). ---

@dataclasses.dataclass
class Lowering:
  """What `lower_for` found: lowered or the first error, and what the module holds."""

  platform: str
  mesh: dict[str, int]
  attention: str  # model.attention -> what it resolves to on the platform
  ok: bool
  seconds: float
  error: str = ""
  error_source: str = ""  # the innermost grlo_jax frame of the error: file:line (function)
  module_bytes: int = 0  # StableHLO text
  serialized_bytes: int = 0  # the module as MLIR bytecode (what jax.export stores)
  custom_calls: dict[str, int] = dataclasses.field(default_factory=dict)
  kernels: dict[str, int] = dataclasses.field(default_factory=dict)
  missing_kernel: str = ""  # the kernel's custom call target when attention asked for it and it is absent
  audit: dict[str, Any] = dataclasses.field(default_factory=dict)
  host_ops: list[str] = dataclasses.field(default_factory=list)  # on an error: host callbacks in the step
  notes: list[str] = dataclasses.field(default_factory=list)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _where(filename: str, line: int, name: str) -> str:
  return f"{filename[filename.rindex('/grlo_jax/') + 1:]}:{line} ({name})"


def _error_source(e: BaseException) -> str:
  frames = [f for f in traceback.extract_tb(e.__traceback__) if "/grlo_jax/" in f.filename]
  return _where(frames[-1].filename, frames[-1].lineno, frames[-1].name) if frames else ""


def _subjaxprs(params: dict[str, Any]):
  for v in params.values():
    for x in v if isinstance(v, (tuple, list)) else (v,):
      if hasattr(x, "eqns"):
        yield x
      elif hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
        yield x.jaxpr


def host_ops(jaxpr) -> list[str]:
  """Host callbacks in a jaxpr (nested ones too), each as `primitive at file:line (function)`: ops that
  lower only for the platform of the host that runs them."""
  found = []
  for eqn in jaxpr.eqns:
    if CALLBACK.search(eqn.primitive.name):
      frames = [f for f in getattr(eqn.source_info.traceback, "frames", ()) if "/grlo_jax/" in f.file_name]
      where = _where(frames[0].file_name, frames[0].line_num, frames[0].function_name) if frames else "?"
      found.append(f"{eqn.primitive.name} at {where}")
    for sub in _subjaxprs(eqn.params):
      found += host_ops(sub)
  return found


def _attention_for(c: ml_collections.ConfigDict, platform: str) -> str:
  # Long rows: the platform's choice for a full-sequence pass (CPU picks by length).
  return attention_lib.resolve(c.model.attention, 1 << 16, 1 << 16, platform)


def lower_for(c: ml_collections.ConfigDict, mesh_shape: Mapping[str, int], platform: str, *,
              host_rewards: bool = False) -> Lowering:
  """Exports `c`'s step for `platform` ("tpu", "cuda") over an abstract mesh of `mesh_shape`.

  A host callback (the RLVR verifier) lowers only for the host's own platform: with
  `host_rewards=False` (default) it is replaced by in-graph zeros and a note says so.
  """
  mesh = abstract_mesh(mesh_shape)
  impl = _attention_for(c, platform)
  r = Lowering(platform=platform, mesh=dict(mesh.shape), attention=f"{c.model.attention} -> {impl}", ok=False,
               seconds=0.0)
  t0 = time.perf_counter()
  try:
    with attention_lib.target_platform(platform), jax.sharding.use_abstract_mesh(mesh):
      fn, args = build.abstract_step(c, mesh, unroll_decode=False, host_rewards=host_rewards)
      checks = [export.DisabledSafetyCheck.custom_call(t) for t in _UNSTABLE_OK]
      exported = export.export(fn, platforms=(platform,), disabled_checks=checks)(*args)
  except Exception as e:  # pylint: disable=broad-except
    r.seconds = time.perf_counter() - t0
    r.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    r.error_source = _error_source(e)
    try:  # when it traces, name the host ops: the usual reason a platform is refused after tracing
      with attention_lib.target_platform(platform), jax.sharding.use_abstract_mesh(mesh):
        r.host_ops = host_ops(fn.trace(*args).jaxpr.jaxpr)  # pylint: disable=used-before-assignment
    except Exception:  # pylint: disable=broad-except
      pass
    r.error_source = "; ".join(r.host_ops) or r.error_source
    return r
  r.seconds = time.perf_counter() - t0
  text = exported.mlir_module()
  r.ok = True
  r.module_bytes = len(text.encode())
  r.serialized_bytes = len(exported.mlir_module_serialized)
  r.custom_calls = dict(custom_calls(text))
  r.kernels = dict(kernel_names(text))
  r.audit = audit(text)
  target = KERNEL_TARGETS.get(impl)
  if target and not any(t.startswith(target) for t in r.custom_calls):
    r.missing_kernel = target
  if not host_rewards and not build.has_reward_model(c):
    r.notes.append("the rule verifier's host callback is replaced by in-graph zeros (a callback lowers "
                   "only for the host's platform)")
  return r


def format_lowering(r: Lowering) -> str:
  mesh = " x ".join(f"{k}={v}" for k, v in r.mesh.items() if v > 1) or "1 device"
  lines = [f"lowered for {r.platform} over {mesh}: " + ("ok" if r.ok else "FAILED") + f" in {r.seconds:.1f} s",
           f"  attention {r.attention}"]
  if not r.ok:
    lines.append(f"  error: {r.error}" + (f"\n  at: {r.error_source}" if r.error_source else ""))
    return "\n".join(lines)
  lines += [f"  module: {r.module_bytes / 2**20:.1f} MiB StableHLO text, {r.serialized_bytes / 2**20:.1f} MiB bytecode",
            f"  custom calls: {r.custom_calls or 'none'}",
            f"  kernels: {r.kernels or 'none'}" + (f"  MISSING {r.missing_kernel}" if r.missing_kernel else ""),
            f"  audit: f64 values {r.audit['f64']}, host callbacks {r.audit['host_callbacks'] or 'none'}, "
            f"dynamic dims {r.audit['dynamic_dims']}",
            f"  matrix products by dtype: {r.audit['dots']}"]
  lines += [f"  note: {n}" for n in r.notes]
  return "\n".join(lines)


# --- Compiling for a TPU topology (libtpu, any host). ---

@dataclasses.dataclass
class Compiled:
  """The TPU compiler's figures for the step on a topology, bytes a chip."""

  topology: str
  chips: int
  device_kind: str
  mesh: dict[str, int]
  hbm_bytes: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  lower_seconds: float
  compile_seconds: float
  collectives: dict[str, dict[str, Any]]
  # The compiler's refusal when the step does not fit a chip: then only its temporaries are known
  # (from the message) and the arguments are counted from the shardings, outputs = aliased = state.
  refused: str = ""

  @property
  def peak_bytes(self) -> int:
    """What the step allocates: the donated state (aliased with the outputs) plus its temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def fits(self, margin: float = 0.9) -> bool:
    return self.peak_bytes <= margin * self.hbm_bytes

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self) | {"peak_bytes": self.peak_bytes, "fits": self.fits()}


def hbm_bytes(topology: str) -> int:
  """A chip's HBM for a topology name like `v5p:2x2x4` (its generation before the colon)."""
  gen = topology.split(":")[0].split("-")[0].lower()
  if gen not in HBM_GIB:
    raise ValueError(f"unknown TPU generation {gen!r} in {topology!r}; known: {', '.join(HBM_GIB)}")
  return HBM_GIB[gen] * GiB


def compile_for(c: ml_collections.ConfigDict, topology: str,
                mesh_shape: Mapping[str, int] | None = None) -> Compiled:
  """Compiles `c`'s step with the TPU compiler for `topology` (e.g. "v5p:2x2x4": 16 chips) on this
  host; needs libtpu. `mesh_shape` defaults to fsdp over every chip."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  hbm = hbm_bytes(topology)
  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  shape = dict(mesh_shape or {"fsdp": -1})
  mesh = sharding.make_mesh(shape, devices=devices)
  t0 = time.perf_counter()
  # The abstract mesh only: a concrete one of topology devices would make jax try to run the
  # kernels' constant tables on them.
  with attention_lib.target_platform("tpu"), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    fn, args = build.abstract_step(c, mesh, unroll_decode=False, host_rewards=False)
    lowered = fn.lower(*args)
  t1 = time.perf_counter()
  base = dict(topology=topology, chips=len(devices), device_kind=devices[0].device_kind,
              mesh=dict(mesh.shape), hbm_bytes=hbm, lower_seconds=t1 - t0)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    temps = re.search(r"HLO temporaries \(([\d.]+)G\)", str(e))
    if not temps:
      raise
    state, batch = _bytes_a_device(args[0], mesh), _bytes_a_device(args[1], mesh)
    return Compiled(**base, argument_bytes=state + batch, output_bytes=state, alias_bytes=state,
                    temp_bytes=int(float(temps.group(1)) * GiB), code_bytes=0,
                    compile_seconds=time.perf_counter() - t1, collectives={},
                    refused=str(e).splitlines()[0][:300])
  t2 = time.perf_counter()
  ma = compiled.memory_analysis()
  from grlo_jax.rl.step import PHASES  # pylint: disable=g-import-not-at-top
  return Compiled(**base, argument_bytes=ma.argument_size_in_bytes, output_bytes=ma.output_size_in_bytes,
                  alias_bytes=ma.alias_size_in_bytes, temp_bytes=ma.temp_size_in_bytes,
                  code_bytes=ma.generated_code_size_in_bytes, compile_seconds=t2 - t1,
                  collectives=collectives(compiled.as_text(), PHASES))


def _bytes_a_device(tree: Any, mesh) -> int:
  """Bytes a device of an abstract train state or batch, sharded as `rl.step.jit_train_step` shards it."""
  if isinstance(tree, dict) and all(isinstance(v, jax.ShapeDtypeStruct) for v in tree.values()):
    shardings = {k: sharding.batch_sharding(mesh, v.shape) for k, v in tree.items()}
  else:
    shardings = sharding.tree_shardings(tree, mesh)
  # `shardings` is a prefix of `tree`: give every leaf under a sharding that sharding.
  per_leaf = jax.tree.map(lambda s, x: jax.tree.map(lambda _: s, x), shardings, tree,
                          is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(per_leaf), strict=True))


def format_compiled(m: Compiled, planned_bytes: int | None = None) -> str:
  mesh = " x ".join(f"{k}={v}" for k, v in m.mesh.items() if v > 1) or "1 chip"
  g = lambda b: f"{b / GiB:.2f} GiB" if b >= GiB / 10 else f"{b / 2**20:.1f} MiB"
  lines = [f"compiled for {m.topology} ({m.chips} x {m.device_kind}, {m.hbm_bytes / GiB:.0f} GiB HBM a chip) "
           f"over {mesh}: lowered in {m.lower_seconds:.1f} s, compiled in {m.compile_seconds:.1f} s",
           f"  a chip: arguments {g(m.argument_bytes)}, outputs {g(m.output_bytes)}, aliased "
           f"{g(m.alias_bytes)}, temporaries {g(m.temp_bytes)}, code {g(m.code_bytes)}",
           f"  peak (arguments + outputs - aliased + temporaries): {g(m.peak_bytes)}; fits in 90%: "
           f"{'yes' if m.fits() else 'no'}"]
  if m.refused:
    lines.append(f"  the compiler refused it: {m.refused}")
  if planned_bytes:
    lines.append(f"  planner: {g(planned_bytes)} ({planned_bytes / m.peak_bytes - 1:+.0%} against compiled)")
  for kind, v in m.collectives.items():
    if v["ops"]:
      phases = ", ".join(f"{p} {b / 2**20:.1f}" for p, b in v["by_phase"].items())
      lines.append(f"  {kind}: {v['ops']} ops, {v['bytes'] / 2**20:.1f} MiB a device, each op once ({phases})")
  return "\n".join(lines)
