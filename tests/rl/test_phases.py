"""The step's phases one by one: the layouts (padded and packed give the same per-sequence values
and gradients), the score passes, the rewards, the advantage dispatch and the optimizer update."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grlo_jax import models
from grlo_jax.rewards.shaping import token_level_rewards
from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl import losses
from grlo_jax.rl.config import GraphDefs, RLConfig
from grlo_jax.rl.layout import Packed, Padded, Sequences, make_layout
from grlo_jax.rl.scoring import score_passes, token_rewards
from grlo_jax.rl.update import apply_update
from grlo_jax.sampling import SamplingParams
from tests.rl.test_step import _cfg

B, P, R = 8, 6, 5


@pytest.fixture(scope="module")
def models_and_seqs():
  policy = models.init_model(_cfg("lm"), seed=0)
  critic = models.init_model(_cfg("value"), seed=2)
  rng = np.random.default_rng(0)
  prompt_mask = np.ones((B, P), bool)
  prompt_mask[::3, :2] = False  # left padding
  resp_len = rng.integers(0, R + 1, B)  # an empty response too
  resp_len[0] = 0
  resp_mask = np.arange(R)[None] < resp_len[:, None]
  seqs = Sequences(jnp.asarray(rng.integers(1, 48, (B, P)) * prompt_mask, jnp.int32), jnp.asarray(prompt_mask),
                   jnp.asarray(rng.integers(1, 48, (B, R)) * resp_mask, jnp.int32), jnp.asarray(resp_mask))
  return policy, critic, seqs


def _layouts(seqs):
  kw = dict(n_mini=2, micro_batch_size=2, mini_size=4)
  return make_layout(seqs, pack=False, **kw), make_layout(seqs, pack=True, row_len=2 * (P + R), **kw)


def test_make_layout_picks_the_layout_and_checks_the_row_budget(models_and_seqs):
  _, _, seqs = models_and_seqs
  padded, packed = _layouts(seqs)
  assert type(padded) is Padded and type(packed) is Packed
  with pytest.raises(ValueError, match="ppo_max_token_len_per_device=10"):
    make_layout(seqs, n_mini=2, micro_batch_size=2, mini_size=4, pack=True, row_len=P + R - 1)


def test_layouts_give_the_same_log_probs_and_values(models_and_seqs):
  policy, critic, seqs = models_and_seqs
  mask = np.asarray(seqs.mask_br)
  outs = []
  for layout in _layouts(seqs):
    logp = jax.jit(lambda s, l=layout: l.log_probs(nnx.graphdef(policy), s, 0.7))(nnx.state(policy))
    vals = jax.jit(lambda s, l=layout: l.values(nnx.graphdef(critic), s))(nnx.state(critic))
    outs.append((np.asarray(logp) * mask, np.asarray(vals) * mask))
  (lp_pad, v_pad), (lp_pack, v_pack) = outs
  np.testing.assert_allclose(lp_pack, lp_pad, atol=1e-5)
  np.testing.assert_allclose(v_pack, v_pad, atol=1e-5)
  # Independent of both: the full model's logits over each unpadded sequence.
  model = policy
  for b in range(B):
    real = np.concatenate([np.asarray(seqs.prompt_ids_bp[b])[np.asarray(seqs.prompt_mask_bp[b])],
                           np.asarray(seqs.resp_br[b])[mask[b]]])
    n = int(mask[b].sum())
    if not n:
      continue
    logits = np.asarray(model(jnp.asarray(real[None])))[0] / 0.7
    logp = jax.nn.log_softmax(logits[-n - 1:-1], axis=-1)
    want = np.take_along_axis(np.asarray(logp), real[-n:, None], axis=1)[:, 0]
    np.testing.assert_allclose(lp_pad[b, :n], want, atol=1e-5)


def test_layouts_accumulate_the_same_mini_batch_gradients(models_and_seqs):
  policy, _, seqs = models_and_seqs
  graphdef, params = nnx.split(policy)
  data = {"mask": seqs.mask_br.astype(jnp.float32), "w": jnp.linspace(-1.0, 1.0, B)[:, None] * jnp.ones((B, R))}

  def grads(layout):
    def loss(params, mb, info):
      logp, _, mask = layout.update_log_probs(graphdef, params, mb, 1.0)
      return losses.agg_loss(logp * mb["w"], mask, "token-mean", **info), {"n": mask.sum()}

    def run(params):
      mini = jax.tree.map(lambda x: x[0], layout.minis(data))  # mini-batch 0
      return layout.accumulate(loss, params, mini, losses.global_batch_info(mini["mask"]))
    return jax.jit(run)(params)

  (g_pad, aux_pad), (g_pack, aux_pack) = (grads(layout) for layout in _layouts(seqs))
  assert float(aux_pad["n"]) == float(aux_pack["n"]) == float(seqs.mask_br[::2].sum())  # rows % 2 == 0
  for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_pack)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


def test_score_passes_skip_what_the_config_does_not_need(models_and_seqs):
  policy, critic, seqs = models_and_seqs
  layout = _layouts(seqs)[0]
  defs = GraphDefs(actor=nnx.graphdef(policy), critic=nnx.graphdef(critic))

  state = types.SimpleNamespace(actor=nnx.state(policy), ref=nnx.state(policy), critic=nnx.state(critic))

  grpo = RLConfig(sampling=SamplingParams(max_new_tokens=R), adv_estimator="grpo", n=2)
  assert score_passes(grpo, defs, state, layout, 1.0, one_update=True) == (None, None, None)
  gae_kl = RLConfig(sampling=SamplingParams(max_new_tokens=R), use_kl_loss=True)
  old, ref, values = score_passes(gae_kl, defs, state, layout, 1.0, one_update=False)
  np.testing.assert_array_equal(np.asarray(old), np.asarray(ref))  # the reference is the actor here
  assert values.shape == (B, R)


def test_token_rewards_place_the_score_and_subtract_the_kl(models_and_seqs):
  _, _, seqs = models_and_seqs
  layout = _layouts(seqs)[0]
  score = jnp.arange(B, dtype=jnp.float32)
  reward_fn = lambda st, rep, ids, mask, roll: score[rep["index_b"]]
  batch_rep = {"input_ids_bp": seqs.prompt_ids_bp, "attention_mask_bp": seqs.prompt_mask_bp,
               "index_b": jnp.arange(B)}
  old = jnp.full((B, R), -1.0)
  ref = jnp.full((B, R), -1.5)
  cfg = RLConfig(sampling=SamplingParams(max_new_tokens=R), use_kl_in_reward=True, kl_coef=0.1)
  got_score, rewards, metrics = token_rewards(cfg, layout, reward_fn, None, batch_rep, None, old, ref)
  mask = np.asarray(seqs.mask_br, np.float32)
  want = np.asarray(token_level_rewards(score, seqs.mask_br)) - 0.1 * 0.5 * mask  # kl = old - ref = 0.5
  np.testing.assert_allclose(np.asarray(got_score), np.arange(B))
  np.testing.assert_allclose(np.asarray(rewards), want, atol=1e-6)
  assert float(metrics["actor/reward_kl_penalty"]) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(adv_lib.ADV_ESTIMATORS))
def test_compute_advantage_calls_each_estimator_with_its_inputs(name):
  rng = np.random.default_rng(1)
  rewards = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  values = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  mask = jnp.ones((4, 3))
  group = jnp.asarray([0, 0, 1, 1])
  got = adv_lib.compute_advantage(name, rewards, values, mask, group, gamma=0.9, lam=0.8,
                                  norm_adv_by_std_in_grpo=False)
  fn = adv_lib.get_adv_estimator_fn(name)
  want = {"gae": lambda: fn(rewards, values, mask, 0.9, 0.8),
          "grpo": lambda: fn(rewards, mask, group, norm_adv_by_std_in_grpo=False),
          "rloo": lambda: fn(rewards, mask, group),
          "reinforce_plus_plus": lambda: fn(rewards, mask, 0.9)}[name]()
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_apply_update_skips_a_non_finite_update():
  params = {"w": jnp.ones(3)}
  tx = optax.sgd(0.5)
  opt = tx.init(params)
  new, _, norm, skipped = apply_update(params, opt, tx, {"w": jnp.ones(3)}, jnp.asarray(1.0))
  np.testing.assert_allclose(np.asarray(new["w"]), 0.5)
  assert float(skipped) == 0.0 and float(norm) == pytest.approx(3 ** 0.5)
  new, _, _, skipped = apply_update(params, opt, tx, {"w": jnp.asarray([1.0, jnp.nan, 1.0])}, jnp.asarray(1.0))
  np.testing.assert_array_equal(np.asarray(new["w"]), 1.0)
  assert float(skipped) == 1.0


def test_step_metrics_explained_variance_is_verls():
  from grlo_jax.rl.step import step_metrics
  rng = np.random.default_rng(2)
  mask = np.ones((4, 3), bool)
  mask[0, 2] = False
  ret, val = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  roll = types.SimpleNamespace(mask=jnp.asarray(mask), lengths=jnp.asarray(mask.sum(1)))
  cfg = RLConfig(sampling=SamplingParams(max_new_tokens=3))
  f = lambda x: jnp.asarray(x, jnp.float32)
  m = step_metrics(cfg, roll, jnp.ones((4, 2), bool), f(np.zeros(4)), f(np.zeros((4, 3))), f(ret), f(ret),
                   f(val), None, None)
  want = 1 - np.var((ret - val)[mask], ddof=1) / (np.var(ret[mask], ddof=1) + 1e-5)
  assert float(m["critic/vf_explained_var"]) == pytest.approx(want, rel=1e-5)
