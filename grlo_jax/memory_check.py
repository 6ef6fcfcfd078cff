"""Preflight: the compiled step's memory against the device's, before the first step runs.

  compiled = memory_check.check(rl, step_fn.lower(state, batch, rng), lower_with, devices)

XLA states what a compiled program needs (`compile().memory_analysis()`: arguments, outputs,
aliased bytes, temporaries) on every backend. The train state is already on the device when the
check runs, so what the step adds is its temporaries and the outputs not aliased with the donated
state; that must fit in what the device has free: `bytes_limit - bytes_in_use` on GPU and TPU, the
host's MemAvailable (/proc/meminfo) shared by its CPU devices on CPU. When it does not, the check
compiles the step again at smaller values of the knobs that bound it (the packed row's token
budget, or the micro-batch; then the rollout's decode slots) and raises `MemoryFitError` naming
the key and the largest value that fits, instead of an allocator error minutes into the run.
The executable of the config as given is returned, so the run does not compile it a second time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import jax
import numpy as np

from grlo_jax.rl.step import RLConfig

log = logging.getLogger(__name__)

GiB = 2**30
# Share of the free memory the step may take: the host process (data, metrics, checkpoint
# staging) and the allocator's fragmentation need the rest.
MARGIN = 0.9
# Compiles the search may spend (each as long as the first on CPU): enough to bisect a token
# budget from 16384 down to one sequence.
MAX_SEARCH_COMPILES = 5
SKIP_HINT = "--config.preflight=False skips this check"


class MemoryFitError(ValueError):
  """The compiled step needs more memory than the device has; names the knob and a value that fits."""


@dataclasses.dataclass(frozen=True)
class StepBytes:
  """XLA's account of one compiled step, bytes a device."""

  arguments: int
  outputs: int
  aliased: int
  temp: int

  @classmethod
  def of(cls, compiled: jax.stages.Compiled) -> StepBytes:
    ma = compiled.memory_analysis()
    return cls(arguments=ma.argument_size_in_bytes, outputs=ma.output_size_in_bytes,
               aliased=ma.alias_size_in_bytes, temp=ma.temp_size_in_bytes)

  @property
  def total(self) -> int:
    """Peak bytes of the step: arguments + outputs not aliased with them + temporaries."""
    return self.arguments + self.outputs - self.aliased + self.temp

  @property
  def added(self) -> int:
    """Bytes the step allocates beyond its arguments (which are resident before it runs)."""
    return self.outputs - self.aliased + self.temp


def _mem_available() -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  raise OSError("/proc/meminfo has no MemAvailable")


def free_bytes(devices: Sequence[jax.Device]) -> tuple[int, str] | None:
  """(bytes free a device, where the figure comes from) for this process's `devices`; None when
  the backend reports nothing. CPU devices share the host's memory, so each gets its share."""
  if devices[0].platform == "cpu":
    try:
      avail = _mem_available()
    except OSError:
      return None
    return avail // len(devices), f"host MemAvailable {avail / GiB:.1f} GiB over {len(devices)} CPU device(s)"
  frees = []
  for d in devices:
    stats = d.memory_stats() or {}
    if "bytes_limit" not in stats:
      return None
    frees.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  return min(frees), f"{devices[0].device_kind} bytes_limit - bytes_in_use (least free of {len(devices)})"


def agreed_free_bytes(devices: Sequence[jax.Device]) -> tuple[int, str] | None:
  """`free_bytes` of this process's devices, the least over all processes: every process then
  takes the same decision (one stopping alone would leave the others waiting in a collective)."""
  got = free_bytes(devices)
  if jax.process_count() == 1:
    return got
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  every = multihost_utils.process_allgather(np.asarray(-1 if got is None else got[0], np.int64))
  if (every < 0).any():
    return None
  return int(every.min()), f"{got[1]}; the least of {jax.process_count()} processes"


@dataclasses.dataclass(frozen=True)
class Knob:
  """A config key that bounds the step's memory, its value, and the smaller values to try (largest first)."""

  key: str
  value: int
  smaller: tuple[int, ...]
  apply: Callable[[RLConfig, int], RLConfig]


def _halvings(value: int, floor: int) -> tuple[int, ...]:
  out = [v for v in (value >> i for i in range(1, 64)) if v > floor]
  return tuple(out) + ((floor,) if floor < value else ())


def knobs(rl: RLConfig, prompts_per_step: int, prompt_length: int) -> list[Knob]:
  """What the search turns, in order: the update's unit (the packed row's token budget, or the
  micro-batch of responses), then the rollout's decode slots (its KV cache)."""
  out = []
  if rl.use_dynamic_bsz:
    out.append(Knob("actor.ppo_max_token_len_per_device", rl.ppo_max_token_len_per_device,
                    _halvings(rl.ppo_max_token_len_per_device, prompt_length + rl.sampling.max_new_tokens),
                    lambda r, v: dataclasses.replace(r, ppo_max_token_len_per_device=v)))
  else:
    mini = rl.ppo_mini_batch_size * rl.n
    out.append(Knob("actor.micro_batch_size", rl.micro_batch_size,
                    tuple(d for d in range(rl.micro_batch_size - 1, 0, -1) if mini % d == 0),
                    lambda r, v: dataclasses.replace(r, micro_batch_size=v)))
  rows = prompts_per_step * rl.n
  slots = min(rl.sampling.max_num_seqs or rows, rows)
  out.append(Knob("rollout.max_num_seqs", slots, _halvings(slots, 1),
                  lambda r, v: dataclasses.replace(r, sampling=dataclasses.replace(r.sampling, max_num_seqs=v))))
  return out


def _gib(n: float) -> str:
  return f"{n / GiB:.2f} GiB"


def check(rl: RLConfig, lowered: jax.stages.Lowered, lower_with: Callable[[RLConfig], jax.stages.Lowered],
          devices: Sequence[jax.Device], *, prompts_per_step: int, prompt_length: int,
          free: tuple[int, str] | None = None, margin: float = MARGIN,
          search_options: dict | None = None) -> jax.stages.Compiled:
  """Compiles `lowered` (the run's step) and returns it when what it adds to its arguments fits in
  `margin` x the free memory of a device (`free`, default `agreed_free_bytes(devices)`); otherwise raises
  `MemoryFitError` naming the knob(s) and the largest value(s) that fit, found by compiling
  `lower_with(rl')` at smaller values (`knobs`) with `search_options` (compiler options: they
  need not make fast code, only the same buffers).
  """
  compiled = lowered.compile()
  need = StepBytes.of(compiled)
  free = free if free is not None else agreed_free_bytes(devices)
  if free is None:
    log.warning("preflight: %s reports no free memory; the step's %s a device is not checked",
                devices[0].platform, _gib(need.total))
    return compiled
  have, source = free
  line = (f"the step needs {_gib(need.added)} a device beyond its {_gib(need.arguments)} of resident "
          f"arguments (XLA: temp {_gib(need.temp)} + outputs not aliased {_gib(need.outputs - need.aliased)}); "
          f"free: {_gib(have)} ({source}), of which {margin:.0%} may be used")
  if need.added <= margin * have:
    log.info("preflight: %s: fits", line)
    return compiled

  budget = [MAX_SEARCH_COMPILES]
  fits_cache: dict[tuple, StepBytes | None] = {}

  def fits(cand: RLConfig, desc: str) -> StepBytes | None:
    """The candidate's bytes when it fits, else None (a candidate that fails to compile does not fit)."""
    key = (cand.ppo_max_token_len_per_device, cand.micro_batch_size, cand.sampling.max_num_seqs)
    if key not in fits_cache:
      budget[0] -= 1
      try:
        got = StepBytes.of(lower_with(cand).compile(compiler_options=search_options or {}))
      except Exception as e:  # noqa: BLE001 (a value the step cannot take does not fit)
        log.info("preflight: %s does not compile: %s", desc, str(e).splitlines()[0] if str(e) else e)
        got = None
      fits_cache[key] = got if got is not None and got.added <= margin * have else None
      log.info("preflight: %s: %s beyond the arguments, %s", desc, _gib(got.added) if got else "-",
               "fits" if fits_cache[key] else "does not fit")
    return fits_cache[key]

  chosen: list[tuple[str, int]] = []
  found = None
  base = rl
  for knob in knobs(rl, prompts_per_step, prompt_length):
    vals = knob.smaller
    # Bisect for the largest value that fits (memory falls with the value; vals largest first).
    lo, hi = 0, len(vals)  # vals[hi:] fit or are untested; vals[:lo] do not fit
    best = None
    while lo < hi and budget[0] > 0:
      mid = (lo + hi) // 2
      got = fits(knob.apply(base, vals[mid]), ", ".join(f"{k}={v}" for k, v in chosen + [(knob.key, vals[mid])]))
      if got:
        best, hi = (vals[mid], got), mid
      else:
        lo = mid + 1
    if best is not None:
      chosen.append((knob.key, best[0]))
      found = best[1]
      break
    if budget[0] <= 0:
      break
    if vals:  # not even the smallest fits: keep it and turn the next knob too
      chosen.append((knob.key, vals[-1]))
      base = knob.apply(base, vals[-1])

  if found is not None:
    sets = " ".join(f"--config.{k}={v}" for k, v in chosen)
    msg = (f"out of memory before the first step: {line}. Set {sets} (compiled: {_gib(found.added)} beyond "
           f"the arguments), or give the step more devices (mesh.*); {SKIP_HINT}.")
  else:
    tried = ", ".join(f"{k}={v}" for k, v in chosen) or "the knobs' smaller values"
    msg = (f"out of memory before the first step: {line}. Even {tried} does not fit (or the search "
           f"ran out of its {MAX_SEARCH_COMPILES} compiles): shorten data.max_prompt_length / "
           f"rollout.response_length, use a smaller model, or give the step more devices (mesh.*); {SKIP_HINT}.")
  raise MemoryFitError(msg)


def search_compiler_options(platform: str) -> dict:
  """Compiler options for the search's compiles: XLA:CPU's LLVM level changes the code's speed,
  not its buffer assignment, and level 0 halves the compile time (tests/test_plan.py)."""
  return {"xla_backend_optimization_level": 0} if platform == "cpu" else {}


def enabled(c) -> bool:
  """`preflight` of the config; True for run records saved before the key existed."""
  return bool(c.get("preflight", True))
