"""The jitted RL step: compiles once, donates its state, shards, accumulates exactly, and learns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grlo_jax import models, sharding
from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.score import make_reward_fn
from grlo_jax.rl import state as state_lib
from grlo_jax.rl.step import GraphDefs, Optimizers, RLConfig, jit_train_step, make_train_step
from grlo_jax.sampling import SamplingParams

VOCAB, PROMPT, RESPONSE = 48, 6, 8


def _cfg(head: str, seed_layers: int = 2) -> models.ModelConfig:
  return models.ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=seed_layers,
                            num_heads=4, num_kv_heads=2, head_dim=8, head=head, num_labels=1)


# Token ids of a made-up chat template over the tiny vocabulary: 1 stops, "2 3" closes a turn.
TEMPLATE = RMTemplate(turn_end_ids=(2, 3), pad_id=0, eos_ids=(1,))


def rm_reward(defs, rule_fn=None):
  """The frozen RM scores the in-graph RM input (same tokenizer), as in the RLHF default."""
  return make_reward_fn(defs.rm, TEMPLATE, rule_fn=rule_fn)


def setup(adv="gae", n=1, prompts=8, mini=None, micro=None, lr=1e-2, mesh=None, epochs=1, sgd=False, **rl_kw):
  policy = models.init_model(_cfg("lm"), seed=0, mesh=mesh)
  rm = models.init_model(_cfg("score"), seed=1, mesh=mesh)
  critic = models.init_model(_cfg("value"), seed=2, mesh=mesh) if adv == "gae" else None
  defs = GraphDefs(actor=nnx.graphdef(policy), critic=None if critic is None else nnx.graphdef(critic),
                   rm=nnx.graphdef(rm))
  txs = (Optimizers(actor=optax.sgd(lr), critic=optax.sgd(lr)) if sgd else
         Optimizers(actor=state_lib.make_optimizer(lr), critic=state_lib.make_optimizer(lr * 3)))
  cfg = RLConfig(sampling=SamplingParams(max_new_tokens=RESPONSE, temperature=1.0, stop_token_ids=(1,)),
                 n=n, adv_estimator=adv,
                 ppo_mini_batch_size=mini or prompts, micro_batch_size=micro or (mini or prompts) * n,
                 ppo_epochs=epochs, **rl_kw)
  cfg.check(prompts)
  # The reference is its own copy: the actor's buffers are donated to the step.
  st = state_lib.place(state_lib.init_state(
      nnx.state(policy), txs.actor, None if critic is None else nnx.state(critic), txs.critic,
      rm=nnx.state(rm), ref=_copy(nnx.state(policy)) if cfg.uses_ref else None), mesh)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, VOCAB, size=(prompts, PROMPT)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::3, :2] = 0  # some left padding
  batch = {"input_ids_bp": jnp.asarray(ids * mask), "attention_mask_bp": jnp.asarray(mask),
           "index_b": jnp.arange(prompts, dtype=jnp.int32), "style_b": jnp.asarray(np.arange(prompts) % 2, jnp.int32)}
  return cfg, defs, txs, st, batch


def build(cfg, defs, txs, st, batch, mesh=None, traces=None, rule_fn=None):
  pure = make_train_step(cfg, defs, txs, rm_reward(defs, rule_fn))

  def counted(*args):  # runs once per trace, i.e. per compilation
    if traces is not None:
      traces.append(1)
    return pure(*args)

  return jit_train_step(counted, mesh, st, batch)


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def test_step_compiles_once_and_donates_its_state():
  cfg, defs, txs, st, batch = setup()
  traces = []
  step = build(cfg, defs, txs, st, batch, traces=traces)
  old = st
  st, m = step(st, batch, jax.random.key(0))
  assert jax.tree.leaves(old.actor)[0].is_deleted()  # donated
  for i in range(2):
    st, m = step(st, batch, jax.random.key(0))
  assert len(traces) == 1
  assert int(st.step) == 3
  for key in ("reward/mean", "actor/pg_loss", "critic/vf_loss", "actor/grad_norm", "critic/grad_norm",
              "response_length/mean", "actor/pg_clipfrac", "actor/ppo_kl", "critic/vf_clipfrac",
              "actor/entropy", "critic/advantages/mean", "critic/returns/mean", "critic/values/mean",
              "response_length/clip_ratio", "rollout/slot_utilization", "rollout/decode_iterations"):
    assert np.isfinite(float(m[key])), key


@pytest.mark.parametrize("adv,n", [("gae", 1), ("grpo", 4)])
def test_micro_batches_give_the_same_update(adv, n):
  prompts = 8 if n == 1 else 4
  outs = []
  for micro in (prompts * n, prompts * n // 4):
    # Plain SGD: the update is the accumulated gradient itself (Adam would amplify rounding noise).
    cfg, defs, txs, st, batch = setup(adv=adv, n=n, prompts=prompts, micro=micro, sgd=True, lr=1.0)
    step = build(cfg, defs, txs, st, batch)
    outs.append(step(st, batch, jax.random.key(3)))
  (a, ma), (b, mb) = outs
  for x, y in zip(jax.tree.leaves(a.actor), jax.tree.leaves(b.actor)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=1e-5)
  for key in ("actor/pg_loss", "actor/pg_clipfrac", "actor/entropy", "actor/grad_norm"):
    np.testing.assert_allclose(float(ma[key]), float(mb[key]), rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("adv,n,kl", [("grpo", 4, True)])
def test_one_update_reuses_its_own_log_probs_as_the_old_ones(adv, n, kl):
  """One update a step: skipping the separate old-log-prob forward changes nothing."""
  prompts = 8 if n == 1 else 4
  kw = dict(use_kl_loss=True, kl_loss_coef=0.1) if kl else {}
  outs = []
  for recompute in (True, False):
    cfg, defs, txs, st, batch = setup(adv=adv, n=n, prompts=prompts, sgd=True, lr=1.0,
                                      recompute_old_log_prob=recompute, **kw)
    outs.append(build(cfg, defs, txs, st, batch)(st, batch, jax.random.key(3)))
  (a, ma), (b, mb) = outs
  for x, y in zip(jax.tree.leaves(a.actor), jax.tree.leaves(b.actor)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=1e-5)
  keys = ["actor/pg_loss", "actor/ppo_kl", "actor/pg_clipfrac", "actor/grad_norm"] + (
      ["actor/kl_to_ref", "actor/kl_loss"] if kl else [])
  for key in keys:
    np.testing.assert_allclose(float(ma[key]), float(mb[key]), rtol=1e-4, atol=1e-6, err_msg=key)


def test_sharded_step_equals_single_device():
  # SGD: the update is the gradient itself (Adam turns float32 noise in ~0 gradients into +-lr).
  cfg, defs, txs, st, batch = setup(micro=4, use_kl_loss=True, sgd=True, lr=0.1)
  step = build(cfg, defs, txs, st, batch)
  single, m1 = step(_copy(st), batch, jax.random.key(5))

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  cfg, defs, txs, st, batch = setup(micro=4, mesh=mesh, use_kl_loss=True, sgd=True, lr=0.1)
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.shape)) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    step = build(cfg, defs, txs, st, batch, mesh)
    multi, m8 = step(st, batch, jax.random.key(5))
  assert len(jax.tree.leaves(multi.actor)[0].sharding.device_set) == 8
  for x, y in zip(jax.tree.leaves(single.actor), jax.tree.leaves(multi.actor)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(float(m1["reward/mean"]), float(m8["reward/mean"]), rtol=1e-4)


@pytest.mark.parametrize("adv,n,prompts,lr", [("gae", 1, 16, 3e-3), ("grpo", 4, 4, 1e-2)])
def test_mean_reward_rises(adv, n, prompts, lr):
  """A tiny random policy against a tiny fixed random RM: the mean score climbs within 50 steps."""
  cfg, defs, txs, st, batch = setup(adv=adv, n=n, prompts=prompts, lr=lr, mini=prompts // 2)
  step = build(cfg, defs, txs, st, batch)
  rewards = []
  for i in range(50):
    st, m = step(st, batch, jax.random.key(0))
    rewards.append(float(m["reward/mean"]))
  first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
  spread = np.std(rewards[:5]) + 1e-3
  assert last > first + 0.05 and last > first + 3 * spread, (adv, rewards)


def test_rule_rows_take_the_host_verifier_and_model_rows_the_rm():
  cfg, defs, txs, st, batch = setup(adv="grpo", n=2, prompts=4)
  seen = []

  def rule_fn(tokens_br, mask_br, index_b, style_b):  # "correct" = the response has a token 5
    seen.append(np.asarray(index_b))
    return ((tokens_br == 5) & mask_br).any(1).astype(np.float32) * 10.0

  step = build(cfg, defs, txs, st, batch, rule_fn=rule_fn)
  _, m = step(st, batch, jax.random.key(0))
  np.testing.assert_array_equal(seen[0], np.repeat(np.arange(4), 2))
  # Rule rows score 0 or 10, model rows the RM's small logits: the max tells which path ran.
  assert float(m["critic/score/max"]) in (0.0, 10.0) or float(m["critic/score/max"]) < 1.0
