"""Preflight (grlo_jax/memory_check.py): the compiled step's memory against the device's.

The search's logic runs on stand-ins for XLA's compiled steps (bytes as a function of the knobs);
one trainer test runs the real thing on the nano config.
"""

import dataclasses
import json
import logging
import re
import types

import jax
import pytest

from grlo_jax import checkpoint, memory_check, trainer
from grlo_jax.rl import build
from tests.train.test_trainer import nano

GiB = 2**30


def packed(**overrides):
  """nano, packed into rows of 16 sequences' worth of tokens (64 + 8 each): 1152 a device."""
  return nano(**{"actor.use_dynamic_bsz": True, "actor.ppo_max_token_len_per_device": 16 * 72, **overrides})


class _Lowered:
  """A stand-in for `jit(step).lower(...)`: compiles to a step whose temp bytes are `temp(rl)`."""

  def __init__(self, rl, temp, log):
    self.rl, self.temp, self.log = rl, temp, log

  def compile(self, compiler_options=None):
    del compiler_options
    self.log.append(self.rl)
    ma = types.SimpleNamespace(argument_size_in_bytes=GiB, output_size_in_bytes=GiB, alias_size_in_bytes=GiB,
                               temp_size_in_bytes=self.temp(self.rl))
    return types.SimpleNamespace(memory_analysis=lambda: ma)


def _check(rl, temp, free_gib):
  compiles = []
  lower_with = lambda r: _Lowered(r, temp, compiles)
  try:
    memory_check.check(rl, lower_with(rl), lower_with, jax.devices()[:1], prompts_per_step=8, prompt_length=64,
                       free=(int(free_gib * GiB / memory_check.MARGIN), "test"))
  except memory_check.MemoryFitError as e:
    return str(e), compiles
  return None, compiles


def _by_budget(rl):  # 1 GiB of rollout + 1 GiB a 1152 tokens of packed row
  return GiB + rl.ppo_max_token_len_per_device * GiB // 1152


def test_the_search_names_the_largest_budget_that_fits():
  rl = build.rl_config(packed())  # budget 1152, candidates 576, 288, 144, 72
  assert _check(rl, _by_budget, free_gib=2.1) == (None, [rl])  # fits: one compile, no search
  msg, compiles = _check(rl, _by_budget, free_gib=1.3)  # 288 (1.25 GiB) fits, 576 (1.5) does not
  assert "--config.actor.ppo_max_token_len_per_device=288 " in msg and "--config.preflight=False" in msg
  assert "the step needs 2.00 GiB a device" in msg and "compiled: 1.25 GiB" in msg
  assert len(compiles) <= 4  # the original + a bisection over 4 values


def test_the_search_turns_the_rollout_slots_when_the_budget_is_not_enough():
  rl = build.rl_config(packed())  # 8 rows: slots 4, 2, 1
  slots = lambda r: min(r.sampling.max_num_seqs or 8, 8)
  temp = lambda r: slots(r) * GiB // 4 + r.ppo_max_token_len_per_device * GiB // 1152  # 2 GiB + 1 GiB
  msg, _ = _check(rl, temp, free_gib=0.6)  # 72 tokens (1/16 GiB) + 2 slots (1/2 GiB)
  assert "--config.actor.ppo_max_token_len_per_device=72 --config.rollout.max_num_seqs=2 " in msg
  msg, _ = _check(rl, temp, free_gib=0.1)  # nothing fits
  assert "Even actor.ppo_max_token_len_per_device=72, rollout.max_num_seqs=1 does not fit" in msg
  assert "mesh." in msg and "--config.preflight=False" in msg


def test_padded_steps_search_the_micro_batch():
  rl = build.rl_config(nano())  # micro-batches of 4 responses, mini-batches of 4: candidates 2, 1
  msg, _ = _check(rl, lambda r: r.micro_batch_size * GiB, free_gib=2.5)
  assert "--config.actor.micro_batch_size=2 " in msg


def test_trainer_stops_before_the_first_step_and_keeps_the_checkpoint(tmp_path, monkeypatch, caplog):
  # nano's step is test_trainer's (one compile for both when the suite shares its XLA cache).
  workdir = tmp_path / "run"
  seen = []
  of = memory_check.StepBytes.of
  monkeypatch.setattr(memory_check.StepBytes, "of", classmethod(lambda cls, compiled: seen.append(
      of(compiled)) or seen[-1]))
  # Fits (the host's real free memory): it trains, and the step compiles once, in the preflight.
  with jax.log_compiles(), caplog.at_level(logging.WARNING, logger="jax._src.dispatch"):
    trainer.train(nano(total_steps=1), workdir)
  step_compiles = [r for r in caplog.records if "Finished XLA compilation of jit(step)" in r.message]
  assert len(step_compiles) == 1, [r.message for r in step_compiles]
  assert len(seen) == 1 and seen[0].temp > 0 and seen[0].arguments > 0
  assert checkpoint.Checkpointer(workdir).latest_step() == 1

  # A device with half of what the step adds beyond its arguments: it stops before step 2, naming
  # the knob and a smaller value whose compile fits, and the run's checkpoint and metrics are as
  # they were. (One candidate, micro-batches of 1 response: each compile takes ~20 s here.)
  free = int(0.5 * seen[0].added / memory_check.MARGIN)
  monkeypatch.setattr(memory_check, "free_bytes", lambda devices: (free, "injected"))
  knobs = memory_check.knobs
  monkeypatch.setattr(memory_check, "knobs", lambda *a, **k: [dataclasses.replace(knobs(*a, **k)[0], smaller=(1,))])
  with pytest.raises(memory_check.MemoryFitError) as err:
    trainer.train(nano(total_steps=2), workdir)
  msg = str(err.value)
  assert re.search(r"Set --config\.actor\.micro_batch_size=1 \(compiled: [\d.]+ GiB", msg), msg
  assert len(seen) == 3 and seen[-1].added <= 0.5 * seen[0].added  # the value it names fits
  assert checkpoint.Checkpointer(workdir).latest_step() == 1
  assert [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")] == [1]


def test_knobs_halve_to_one_sequence_and_divide_the_mini_batch():
  rl = build.rl_config(packed())
  update, slots = memory_check.knobs(rl, prompts_per_step=8, prompt_length=64)
  assert update.key == "actor.ppo_max_token_len_per_device" and update.smaller == (576, 288, 144, 72)
  assert slots.key == "rollout.max_num_seqs" and slots.smaller == (4, 2, 1)
  update, _ = memory_check.knobs(build.rl_config(nano()), prompts_per_step=8, prompt_length=64)
  assert update.key == "actor.micro_batch_size" and update.smaller == (2, 1)
