"""The "style_mix" router: each record's `reward_model.style` picks its reward.

Style 0 ("model") takes the reward model's score, style 1 ("rule") a verifier's (math answers
by default), so one batch can mix open-ended and verifiable prompts. The RM scores every row
(static shapes); the rule scores come from the host, zero on model rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# `data.STYLE_IDS`, restated so that this in-graph module needs no data import.
STYLE_MODEL, STYLE_RULE = 0, 1


def route_rewards(style_b: jax.Array, model_score_b: jax.Array, rule_score_b: jax.Array) -> jax.Array:
  """Per-row reward [B] (float32): the rule score where style is 1, the model score elsewhere."""
  return jnp.where(style_b == STYLE_RULE, rule_score_b.astype(jnp.float32),
                   model_score_b.astype(jnp.float32))


def rule_scores(responses_text_b: Sequence[str], ground_truth_b: Sequence[str], style_b: Sequence[int],
                verifier: Callable[[str, str], float] | None = None) -> np.ndarray:
  """Host verifier scores [B] (float32) for rule rows, 0.0 on model rows (never verified).

  `verifier(completion, ground_truth) -> float` defaults to `verifiers.math.math_reward`.
  """
  if verifier is None:
    from grlo_jax.rewards.verifiers.math import math_reward  # lazy: verifiers import heavy deps
    verifier = math_reward
  style_b = np.asarray(style_b)
  if not len(responses_text_b) == len(ground_truth_b) == len(style_b):
    raise ValueError(f"lengths differ: {len(responses_text_b)} responses, {len(ground_truth_b)} "
                     f"ground truths, {len(style_b)} styles")
  out = np.zeros(len(style_b), np.float32)
  for i, (text, truth, style) in enumerate(zip(responses_text_b, ground_truth_b, style_b)):
    if style == STYLE_RULE:
      out[i] = verifier(text, truth)
  return out
