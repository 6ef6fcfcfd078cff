"""The step's reward function: RM score in-graph, rule scores through a host hook, routed by style."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.router import STYLE_RULE, route_rewards, rule_scores
from grlo_jax.rewards.shaping import ShapingConfig, shape_scores

# rule_fn(tokens_br, mask_br, record_index_b, style_b) -> float32 [B], on the host (numpy in and out).
RuleFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# rm_input_fn(tokens_br, mask_br, record_index_b) -> (ids_bt, mask_bt) int32 [B, T] with a fixed T:
# the RM's input built on the host (an RM with another tokenizer, `retokenize.retokenize_for_rm`).
ROUTES = ("style", "model", "rule")
RMInputFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_rule_fn(decode: Callable[[np.ndarray, np.ndarray], list[str]], ground_truth: Mapping[int, str],
                 verifier: Callable[[str, str], float], *, format_penalty: float = 0.0, has_answer: Callable[[str], bool] | None = None) -> RuleFn:
  """A host `RuleFn`: decode each rule row's response, score it against its record's ground truth.

  `decode(tokens_br, mask_br)` gives the response texts; `ground_truth` maps a record index to its
  answer. `format_penalty` is subtracted from rule rows where `has_answer` finds no final answer.
  """
  def rule_fn(tokens_br, mask_br, index_b, style_b):
    texts = decode(tokens_br, mask_br)
    truths = [ground_truth[int(i)] for i in index_b]
    out = rule_scores(texts, truths, style_b, verifier)
    if format_penalty and has_answer is not None:
      for i, (text, style) in enumerate(zip(texts, style_b)):
        if style == STYLE_RULE and not has_answer(text):
          out[i] -= format_penalty
    return out

  return rule_fn


def make_reward_fn(rm_graphdef: nnx.GraphDef | None, template: RMTemplate | None,
                   rule_fn: RuleFn | None = None, shaping: ShapingConfig | None = None,
                   rm_input_fn: RMInputFn | None = None, rm_input_length: int = 0,
                   route: str = "style"):
  """`reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll) -> score_b` for `rl.step`.

  Rows whose `style_b` is "model" (0) get the reward model's score of the in-graph RM input; rows
  whose style is "rule" (1) get `rule_fn`'s verdict, computed on the host through
  `jax.pure_callback` (only when a rule hook is given: the RLHF default stays on the device).
  `batch_rep` is the prompt batch repeated `n` times, one row per response. With `rm_input_fn`
  the RM's input (`rm_input_length` tokens) comes from the host instead of the in-graph splice;
  the RM forward still runs in the step. `route`: "style" (per row, as above), "model" or "rule"
  (every row takes that score). The step may pass `rm_forward(rm_model, ids_bt, mask_bt) -> [B]`
  to run the reward model its own way (on packed rows, `actor.use_dynamic_bsz`).
  """
  if rm_graphdef is None and rule_fn is None:
    raise ValueError("a reward needs a reward model, a rule hook, or both")
  if route not in ROUTES:
    raise ValueError(f"reward.route={route!r}; known: {ROUTES}")
  if route == "model" and rm_graphdef is None:
    raise ValueError("reward.route='model' needs a reward model (model.rm_path / model.rm_arch)")
  if route == "rule" and rule_fn is None:
    raise ValueError("reward.route='rule' needs a verifier (reward.rule)")

  def reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll, *, rm_forward=None):
    b = prompt_ids_bp.shape[0]
    model_b = jnp.zeros((b,), jnp.float32)
    if rm_graphdef is not None:
      rm = nnx.merge(rm_graphdef, state.rm)
      if rm_input_fn is None:
        ids_bt, mask_bt = template.build(prompt_ids_bp, prompt_mask_bp, roll.tokens, roll.mask)
      else:
        shape = jax.ShapeDtypeStruct((b, rm_input_length), jnp.int32)
        ids_bt, mask_bt = jax.pure_callback(
            lambda *a: tuple(np.asarray(x, np.int32) for x in rm_input_fn(*(np.asarray(x) for x in a))),
            (shape, shape), roll.tokens, roll.mask, batch_rep["index_b"])
      if rm_forward is None:
        model_b = rm(ids_bt, attention_mask=mask_bt)[:, 0].astype(jnp.float32)
      else:  # the step's packed forward (`rl.packed.rm_scores`)
        model_b = rm_forward(rm, ids_bt, mask_bt).astype(jnp.float32)
    score_b = model_b
    if rule_fn is not None and route != "model":
      style_b = (batch_rep.get("style_b", jnp.full((b,), STYLE_RULE, jnp.int32)) if route == "style" else
                 jnp.full((b,), STYLE_RULE, jnp.int32))
      rule_b = jax.pure_callback(
          lambda *a: np.asarray(rule_fn(*(np.asarray(x) for x in a)), np.float32),
          jax.ShapeDtypeStruct((b,), jnp.float32), roll.tokens, roll.mask, batch_rep["index_b"], style_b)
      score_b = route_rewards(style_b, model_b, rule_b) if rm_graphdef is not None else rule_b
    if shaping is not None:
      score_b = shape_scores(score_b, roll.tokens, roll.mask, template.eos_ids if template else (), shaping)
    return score_b

  return reward_fn
