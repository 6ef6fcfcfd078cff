"""The style router: model and rule rows in one batch."""

import jax
import jax.numpy as jnp
import numpy as np

from grlo_jax import data
from grlo_jax.rewards import router


def test_style_ids_match_the_data_pipeline():
  assert data.STYLE_IDS == {"model": router.STYLE_MODEL, "rule": router.STYLE_RULE}


def test_router_mixes_model_and_rule_rows():
  style_b = np.array([0, 1, 1, 0], np.int32)
  texts = ["a story", "so the answer is \\boxed{4}", "it is \\boxed{5}", "another story"]
  truths = ["", "4", "4", ""]
  calls = []

  def verifier(text, truth):
    calls.append(text)
    return 1.0 if text.endswith("{" + truth + "}") else 0.0

  rule_b = router.rule_scores(texts, truths, style_b, verifier=verifier)
  assert rule_b.dtype == np.float32
  np.testing.assert_array_equal(rule_b, [0.0, 1.0, 0.0, 0.0])
  assert calls == texts[1:3]  # model rows never reach the verifier
  model_b = jnp.array([0.5, -3.0, 7.0, -1.25], jnp.bfloat16)
  reward_b = jax.jit(router.route_rewards)(style_b, model_b, rule_b)
  assert reward_b.dtype == jnp.float32
  np.testing.assert_array_equal(reward_b, [0.5, 1.0, 0.0, -1.25])


def test_rule_scores_default_to_math_reward():
  rule_b = router.rule_scores(["The answer is \\boxed{12}.", "x", "The answer is \\boxed{13}."],
                              ["12", "", "12"], [1, 0, 1])
  np.testing.assert_array_equal(rule_b, [1.0, 0.0, 0.0])
