"""rl.flops.step_flops against XLA's own count of the compiled step (its cost analysis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grlo_jax import models
from grlo_jax.models.flops import generate_flops
from grlo_jax.models.transformer import DECODE_PAD
from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.score import make_reward_fn
from grlo_jax.rl import flops as rl_flops
from grlo_jax.rl import state as state_lib
from grlo_jax.rl.step import GraphDefs, Optimizers, RLConfig, jit_train_step, make_train_step
from grlo_jax.sampling import SamplingParams

PROMPTS, PROMPT = 8, 64
# Two new tokens: the prefill and ONE decode step. XLA's cost analysis counts a while loop's body
# once, so the rollout's loop (and the one-layer scans, one micro-batch) are then counted exactly.
RESPONSE = 2


def _cfg(head):
  return models.ModelConfig(vocab_size=1024, hidden_size=256, intermediate_size=768, num_layers=1,
                            num_heads=8, num_kv_heads=4, head_dim=32, head=head, num_labels=1)


@pytest.mark.parametrize("adv,n,recompute", [("gae", 1, True), ("grpo", 4, False)])
def test_step_flops_match_xla(adv, n, recompute):
  policy, rm = models.init_model(_cfg("lm")), models.init_model(_cfg("score"), seed=1)
  critic = models.init_model(_cfg("value"), seed=2) if adv == "gae" else None
  defs = GraphDefs(actor=nnx.graphdef(policy), critic=critic and nnx.graphdef(critic), rm=nnx.graphdef(rm))
  txs = Optimizers(actor=state_lib.make_optimizer(1e-3), critic=state_lib.make_optimizer(1e-3))
  prompts = PROMPTS // n
  cfg = RLConfig(sampling=SamplingParams(max_new_tokens=RESPONSE), n=n, adv_estimator=adv,
                 ppo_mini_batch_size=prompts, micro_batch_size=PROMPTS, use_kl_loss=True,
                 recompute_old_log_prob=recompute)
  template = RMTemplate(turn_end_ids=(2, 3), pad_id=0, eos_ids=())
  st = state_lib.init_state(nnx.state(policy), txs.actor, critic and nnx.state(critic), txs.critic,
                            rm=nnx.state(rm), ref=nnx.state(policy))
  ids = np.random.default_rng(0).integers(4, 1024, (prompts, PROMPT)).astype(np.int32)
  batch = {"input_ids_bp": jnp.asarray(ids), "attention_mask_bp": jnp.ones_like(jnp.asarray(ids))}
  step = jit_train_step(make_train_step(cfg, defs, txs, make_reward_fn(defs.rm, template)), None, st, batch)
  got = step.lower(st, batch, jax.random.key(0)).compile().cost_analysis()["flops"]

  want = rl_flops.step_flops(cfg, policy.cfg, prompts, PROMPT, critic=critic and critic.cfg, rm=rm.cfg,
                             rm_len=PROMPT + RESPONSE + 2, causal=False)
  assert (want["old_log_prob"] > 0) == recompute and (want["values"] > 0) == (adv == "gae")
  # The decode weights carry DECODE_PAD extra output columns, which the formula does not count.
  c = policy.cfg
  padding = 2 * PROMPTS * (PROMPT + 1) * DECODE_PAD * (4 * c.hidden_size + c.num_heads * c.head_dim
                                                       + c.intermediate_size)
  # What is left is XLA's count of elementwise work and AdamW: ~1% here.
  assert want["total"] + padding == pytest.approx(got, rel=0.03)


def _rollout_counts(max_num_seqs):
  """One greedy rollout of 3 left-padded prompts (real lengths 20, 12, 5 of P = 20), 4 new tokens,
  no stop token: every row decodes all 4."""
  model = models.init_model(_cfg("lm"))
  p, n, lens = 20, 4, (20, 12, 5)
  mask = np.stack([np.arange(p) >= p - l for l in lens]).astype(np.int32)
  ids = np.where(mask, np.random.default_rng(0).integers(4, 1024, (3, p)), 0).astype(np.int32)
  params = SamplingParams(max_new_tokens=n, temperature=0.0, max_num_seqs=max_num_seqs)
  from grlo_jax import rollout
  out, stats = rollout.generate(model, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), params)
  assert np.asarray(out.lengths).tolist() == [n] * 3
  return model.cfg, p, n, lens, jax.device_get(stats.metrics())


def _expected_flops(c, positions, heads, pairs):
  lw = 2 * c.hidden_size * c.num_heads * c.head_dim + 2 * c.hidden_size * c.num_kv_heads * c.head_dim \
      + 3 * c.hidden_size * c.intermediate_size
  return (2 * positions * lw * c.num_layers + 4 * pairs * c.num_heads * c.head_dim * c.num_layers
          + 2 * heads * c.hidden_size * c.vocab_size)


def test_rollout_flops_count_what_the_engine_ran():
  # One slot: each row is prefilled alone (one chunk of min(prefill_chunk, P) = 20 tokens, whose
  # queries see keys up to its end), then decodes its 3 more tokens alone over the slots its
  # cache holds (P + t filled, read in blocks of 128 capped at the cache's P + N = 24 slots).
  c, p, n, lens, m = _rollout_counts(max_num_seqs=1)
  chunk = min(128, p)
  assert m["rollout/prefill_rows"] == 3 and m["rollout/row_steps"] == 3 * (n - 1)
  assert m["rollout/prefill_tokens"] == sum(chunk * -(-l // chunk) for l in lens)
  assert m["rollout/prefill_pairs"] == sum(chunk * chunk * k * (k + 1) / 2 for k in (-(-l // chunk) for l in lens))
  assert m["rollout/decode_pairs"] == sum(min(-(-(l + t) // 128) * 128, p + n) for l in lens for t in range(1, n))
  want = _expected_flops(c, m["rollout/prefill_tokens"] + m["rollout/row_steps"],
                         m["rollout/prefill_rows"] + m["rollout/row_steps"],
                         m["rollout/prefill_pairs"] + m["rollout/decode_pairs"])
  assert rl_flops.rollout_flops(c, m) == pytest.approx(want, rel=1e-9)
  useful = sum(generate_flops(c, 1, l, n) for l in lens)
  assert 1.0 < rl_flops.rollout_flops(c, m) / useful < 2.0


def test_static_rollout_flops_count_every_row_over_the_whole_cache():
  c, p, n, lens, m = _rollout_counts(max_num_seqs=None)
  assert m["rollout/prefill_tokens"] == 3 * p and m["rollout/row_steps"] == 3 * (n - 1)
  assert m["rollout/prefill_pairs"] == 3 * p * (p + 1) / 2
  assert m["rollout/decode_pairs"] == 3 * (n - 1) * (p + n)


def test_flop_ratios_split_the_rollout_from_the_passes():
  useful = {"rollout": 10, "update": 30, "total": 40}
  computed = {"rollout": 15, "update": 33, "total": 48}
  r = rl_flops.flop_ratios(useful, computed)
  assert r == {"perf/computed_flop_ratio": 1.2, "perf/rollout_flop_ratio": 1.5, "perf/passes_flop_ratio": 1.1}
