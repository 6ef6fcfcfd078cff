"""The step's reward function: RM score in-graph, rule scores through a host hook, routed by style."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.router import route_rewards
from grlo_jax.rewards.shaping import ShapingConfig, shape_scores

# rule_fn(tokens_br, mask_br, record_index_b, style_b) -> float32 [B], on the host (numpy in and out).
RuleFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def make_reward_fn(rm_graphdef: nnx.GraphDef | None, template: RMTemplate | None,
                   rule_fn: RuleFn | None = None, shaping: ShapingConfig | None = None):
  """`reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll) -> score_b` for `rl.step`.

  Rows whose `style_b` is "model" (0) get the reward model's score of the in-graph RM input; rows
  whose style is "rule" (1) get `rule_fn`'s verdict, computed on the host through
  `jax.pure_callback` (only when a rule hook is given: the RLHF default stays on the device).
  `batch_rep` is the prompt batch repeated `n` times, one row per response.
  """
  if rm_graphdef is None and rule_fn is None:
    raise ValueError("a reward needs a reward model, a rule hook, or both")

  def reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll):
    b = prompt_ids_bp.shape[0]
    model_b = jnp.zeros((b,), jnp.float32)
    if rm_graphdef is not None:
      rm = nnx.merge(rm_graphdef, state.rm)
      ids_bt, mask_bt = template.build(prompt_ids_bp, prompt_mask_bp, roll.tokens, roll.mask)
      model_b = rm(ids_bt, attention_mask=mask_bt)[:, 0].astype(jnp.float32)
    score_b = model_b
    if rule_fn is not None:
      style_b = batch_rep.get("style_b", jnp.ones((b,), jnp.int32))
      rule_b = jax.pure_callback(
          lambda *a: np.asarray(rule_fn(*(np.asarray(x) for x in a)), np.float32),
          jax.ShapeDtypeStruct((b,), jnp.float32), roll.tokens, roll.mask, batch_rep["index_b"], style_b)
      score_b = route_rewards(style_b, model_b, rule_b) if rm_graphdef is not None else rule_b
    if shaping is not None:
      score_b = shape_scores(score_b, roll.tokens, roll.mask, template.eos_ids if template else (), shaping)
    return score_b

  return reward_fn
