"""rl.flops.step_flops against XLA's own count of the compiled step (its cost analysis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grlo_jax import models
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
