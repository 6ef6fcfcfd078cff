"""Advantage estimators: parity with verl 0.9.1 (stored fixtures) and closed-form checks."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax.rl import advantages

REF = np.load(pathlib.Path(__file__).with_name("verl_reference") / "verl_0_9_1.npz")
CASES = json.loads(str(REF["cases"]))
TOL = dict(rtol=1e-5, atol=1e-5)


# Module-level jits: gamma and lam are traced, so every case shares one compilation.
GAE = jax.jit(advantages.compute_gae_advantage_return)
GRPO = jax.jit(advantages.compute_grpo_outcome_advantage, static_argnames="norm_adv_by_std_in_grpo")
RLOO = jax.jit(advantages.compute_rloo_outcome_advantage)
RPP = jax.jit(advantages.compute_reinforce_plus_plus_outcome_advantage)


@pytest.mark.parametrize("case", range(len(CASES["gae"])))
def test_gae_matches_verl(case):
  gamma, lam = CASES["gae"][case]
  adv_br, ret_br = GAE(REF["gae.rewards"], REF["gae.values"], REF["mask"], gamma, lam)
  assert adv_br.dtype == ret_br.dtype == jnp.float32
  np.testing.assert_allclose(adv_br, REF[f"gae.{case}.advantages"], **TOL)
  np.testing.assert_allclose(ret_br, REF[f"gae.{case}.returns"], **TOL)


def test_gae_runs_eagerly_on_numpy():
  adv_br, _ = advantages.compute_gae_advantage_return(REF["gae.rewards"], REF["gae.values"], REF["mask"], 1.0, 1.0)
  assert isinstance(adv_br, jax.Array)
  np.testing.assert_allclose(adv_br, REF["gae.0.advantages"], **TOL)


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_verl(norm):
  adv_br, ret_br = GRPO(REF["outcome.rewards"], REF["mask"], REF["outcome.index"], norm_adv_by_std_in_grpo=norm)
  np.testing.assert_allclose(adv_br, REF[f"grpo.norm{int(norm)}.advantages"], **TOL)
  np.testing.assert_allclose(ret_br, REF[f"grpo.norm{int(norm)}.returns"], **TOL)


def test_rloo_matches_verl():
  adv_br, ret_br = RLOO(REF["outcome.rewards"], REF["mask"], REF["outcome.index"])
  np.testing.assert_allclose(adv_br, REF["rloo.advantages"], **TOL)
  np.testing.assert_allclose(ret_br, REF["rloo.returns"], **TOL)


@pytest.mark.parametrize("case", range(len(CASES["reinforce_plus_plus"])))
def test_reinforce_plus_plus_matches_verl(case):
  gamma = CASES["reinforce_plus_plus"][case]
  adv_br, ret_br = RPP(REF["gae.rewards"], REF["mask"], gamma)
  np.testing.assert_allclose(adv_br, REF[f"rpp.{case}.advantages"], **TOL)
  np.testing.assert_allclose(ret_br, REF[f"rpp.{case}.returns"], **TOL)


def test_fixture_covers_the_edge_cases():
  mask_br, index_b = REF["mask"], REF["outcome.index"]
  lengths_b = mask_br.sum(-1)
  assert (lengths_b == 0).any() and ((lengths_b == 1) & (mask_br[:, 0] == 1)).any()
  assert (np.diff(mask_br, axis=-1) > 0).any()   # a 0 -> 1 step: an interior gap
  score_b = REF["outcome.rewards"].sum(-1)
  sizes = {g: (index_b == g).sum() for g in np.unique(index_b)}
  assert 1 in sizes.values()
  assert any(n > 1 and np.ptp(score_b[index_b == g]) == 0 for g, n in sizes.items())


def _reward_to_go(reward_br, mask_br):
  """NumPy reference: sum of the rewards at valid positions from t on (gamma = 1)."""
  return np.flip(np.cumsum(np.flip(reward_br * mask_br, -1), -1), -1)


def _whiten(x_br, mask_br):
  valid = x_br[mask_br > 0]
  return (x_br - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)


def test_gae_with_unit_gamma_lambda_and_zero_critic_is_whitened_reward_to_go():
  rng = np.random.default_rng(1)
  reward_br = rng.normal(size=(4, 9)).astype(np.float32)
  mask_br = (np.arange(9) < np.array([[9], [5], [1], [7]])).astype(np.float32)
  mask_br[0, 4] = 0.0
  adv_br, ret_br = GAE(reward_br, np.zeros_like(reward_br), mask_br, 1.0, 1.0)
  rtg_br = _reward_to_go(reward_br, mask_br)
  # Masked positions carry the next valid position's value (0 after the last valid token).
  rtg_br[0, 4] = rtg_br[0, 5]
  np.testing.assert_allclose(ret_br, rtg_br, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(adv_br, _whiten(rtg_br, mask_br), rtol=1e-4, atol=1e-5)


def test_gae_with_zero_lambda_is_the_td_error():
  rng = np.random.default_rng(2)
  reward_br, value_br = rng.normal(size=(2, 2, 6)).astype(np.float32)
  mask_br = np.ones_like(reward_br)
  _, ret_br = GAE(reward_br, value_br, mask_br, 0.9, 0.0)
  next_value_br = np.concatenate([value_br[:, 1:], np.zeros((2, 1), np.float32)], -1)
  np.testing.assert_allclose(ret_br - value_br, reward_br + 0.9 * next_value_br - value_br, atol=1e-5)


def test_grpo_is_groupwise_standardised_score():
  rng = np.random.default_rng(3)
  score_b = rng.normal(size=6).astype(np.float32)
  reward_br = np.zeros((6, 4), np.float32)
  reward_br[:, -1] = score_b
  mask_br = np.ones((6, 4), np.float32)
  index_b = np.array([2, 0, 2, 0, 2, 5])
  adv_br, _ = GRPO(reward_br, mask_br, index_b, epsilon=1e-6)
  want_b = np.empty(6, np.float32)
  for g in (0, 2):
    s = score_b[index_b == g]
    want_b[index_b == g] = (s - s.mean()) / (s.std(ddof=1) + 1e-6)
  want_b[5] = score_b[5] / (1 + 1e-6)   # a group of one: mean 0, std 1
  np.testing.assert_allclose(adv_br, np.broadcast_to(want_b[:, None], (6, 4)), rtol=1e-5, atol=1e-6)


def test_rloo_subtracts_the_mean_of_the_others():
  score_b = np.array([1.0, 2.0, 6.0, 3.0, 5.0], np.float32)
  index_b = np.array([0, 0, 0, 1, 3])
  adv_br, _ = RLOO(score_b[:, None], np.ones((5, 1)), index_b)
  np.testing.assert_allclose(adv_br[:, 0], [1 - 4, 2 - 3.5, 6 - 1.5, 3.0, 5.0], rtol=1e-6)


def test_reinforce_plus_plus_unit_gamma_returns_are_reward_to_go():
  rng = np.random.default_rng(4)
  reward_br = rng.normal(size=(3, 7)).astype(np.float32)
  mask_br = (np.arange(7) < np.array([[7], [4], [6]])).astype(np.float32)
  mask_br[2, 2] = 0.0
  adv_br, ret_br = RPP(reward_br, mask_br, 1.0)
  rtg_br = _reward_to_go(reward_br, mask_br) * mask_br
  np.testing.assert_allclose(ret_br, rtg_br, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(adv_br, _whiten(rtg_br, mask_br) * mask_br, rtol=1e-4, atol=1e-5)


def test_registry_and_uids():
  assert advantages.get_adv_estimator_fn("gae") is advantages.compute_gae_advantage_return
  assert advantages.get_adv_estimator_fn("grpo") is advantages.compute_grpo_outcome_advantage
  with pytest.raises(ValueError):
    advantages.get_adv_estimator_fn("ppo")
  np.testing.assert_array_equal(advantages.index_from_uids(np.array(["u7", "u2", "u7", "u9"])), [1, 0, 1, 2])
