"""Seconds by phase of one jitted call, from a profiler trace and the named scopes in its HLO.

  seconds = phases.seconds_by_phase(jitted, args, run, PHASES)

The RL step names its phases with `jax.named_scope` (`rl.step.PHASES`). XLA keeps a scope in each instruction's `op_name`
metadata; on CPU the trace has one event per executed instruction (fusions, dots, copies). Each
event's time goes to the first phase named in its instruction's op_name, else to "other" (the
optimizer, advantages, and the instructions XLA adds without metadata, such as those inside a
custom VJP). Times are of leaf instructions on the host thread that runs them, so a phase's
figure counts its own kernels, not the waits between them.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import tempfile
from collections.abc import Callable, Sequence

import jax

from grlo_jax.rl.step import PHASES as STEP_PHASES

_CONTROL = ("while", "cond", "conditional", "call", "ThunkExecutor", "$")  # events that contain others


def instruction_phases(hlo_text: str, phases: Sequence[str]) -> dict[str, str]:
  """Instruction name -> the first of `phases` in its op_name ("other" when none)."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if not m:
      continue
    op = re.search(r'op_name="([^"]*)"', line)
    parts = op.group(1).split("/") if op else []
    out[m.group(1)] = next((p for p in parts if p in phases), "other")
  return out


def seconds_by_phase(jitted, args: tuple, run: Callable[[], None],
                     phases: Sequence[str] = STEP_PHASES) -> dict[str, float]:
  """Trace one `run()` (which calls `jitted(*args)` and blocks) and sum its instructions' times by phase."""
  names = instruction_phases(jitted.lower(*args).compile().as_text(), phases)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    run()
    jax.profiler.stop_trace()
    trace = sorted(pathlib.Path(tmp).rglob("*.trace.json.gz"))[-1]
    events = json.load(gzip.open(trace))["traceEvents"]
  total = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or name.startswith(_CONTROL) or name not in names:
      continue
    total[names[name]] += e.get("dur", 0) / 1e6
  return {k: round(total[k], 3) for k in (*phases, "other") if total[k]}
