"""Shaping terms against hand-computed values, and the score's placement on tokens."""

import jax
import jax.numpy as jnp
import numpy as np

from grlo_jax.rewards import shaping

EOS = (9, 8)
# R = 10. Lengths 10 (truncated), 10 (stop at the last slot), 7 (stopped), 3 (truncated), 0.
IDS_BR = np.array([[1] * 10,
                   [1] * 9 + [9],
                   [1] * 6 + [8, 0, 0, 0],
                   [1, 1, 1] + [0] * 7,
                   [0] * 10])
MASK_BR = np.array([[1] * 10, [1] * 10, [1] * 7 + [0] * 3, [1] * 3 + [0] * 7, [0] * 10], bool)


def test_lengths_and_truncation():
  np.testing.assert_array_equal(shaping.response_lengths(MASK_BR), [10, 10, 7, 3, 0])
  np.testing.assert_array_equal(shaping.is_truncated(IDS_BR, MASK_BR, EOS), [True, False, False, True, True])


def test_overlong_penalty_by_hand():
  # L = 10, W = 4: no penalty up to 6, then -(l - 6) / 4 * 0.5.
  length_b = jnp.array([0, 6, 7, 9, 10])
  np.testing.assert_allclose(shaping.overlong_penalty(length_b, 10, 4, 0.5),
                             [0.0, 0.0, -0.125, -0.375, -0.5])
  np.testing.assert_array_equal(shaping.overlong_penalty(length_b, 10, 0), np.zeros(5))


def test_truncation_and_length_penalties_by_hand():
  np.testing.assert_allclose(shaping.truncation_penalty(jnp.array([True, False]), 0.7), [-0.7, 0.0])
  np.testing.assert_allclose(shaping.length_penalty(jnp.array([0, 5, 10]), 10, 0.2), [0.0, -0.1, -0.2])


def test_shape_scores_off_by_default_and_summed_when_on():
  score_b = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  np.testing.assert_array_equal(shaping.shape_scores(score_b, IDS_BR, MASK_BR, EOS, shaping.ShapingConfig()),
                                score_b)
  cfg = shaping.ShapingConfig(overlong_buffer_len=4, overlong_penalty_factor=1.0, truncation_penalty=0.5,
                              length_penalty_coef=0.1)
  got = jax.jit(shaping.shape_scores, static_argnums=(3, 4))(score_b, IDS_BR, MASK_BR, EOS, cfg)
  # lengths 10, 10, 7, 3, 0 -> overlong -(l - 6) / 4 clipped at 0; truncated rows 0, 3, 4; -0.1 l / 10.
  want = [1 - 1.0 - 0.5 - 0.1, 2 - 1.0 - 0.1, 3 - 0.25 - 0.07, 4 - 0.5 - 0.03, 5 - 0.5]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.dtype == jnp.float32


def test_token_level_rewards_at_last_valid_token():
  score_b = jnp.array([1.5, -2.0, 3.0, 0.25, 7.0], jnp.bfloat16)
  rewards_br = jax.jit(shaping.token_level_rewards)(score_b, MASK_BR)
  assert rewards_br.dtype == jnp.float32 and rewards_br.shape == (5, 10)
  want = np.zeros((5, 10), np.float32)
  want[0, 9], want[1, 9], want[2, 6], want[3, 2] = 1.5, -2.0, 3.0, 0.25
  np.testing.assert_array_equal(rewards_br, want)  # the empty row 4 gets no reward anywhere
