"""Advantage estimators (GAE, GRPO, RLOO, REINFORCE++) and the masked statistics they use.

Each estimator is a pure function of [b, r] arrays named and parameterised as in verl 0.9.1's
`verl.trainer.ppo.core_algos`, returns `(advantages_br, returns_br)` in float32 and gives the same
numbers as verl, padding positions included. NumPy inputs are accepted; everything jits, with
strings and booleans static. Group ids (`index`) are ints in [0, b), not verl's uid strings, so
that grouping runs in-graph; `index_from_uids` converts on the host.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.typing.ArrayLike


def masked_sum(values: ArrayLike, mask: ArrayLike, axis: int | None = None) -> jax.Array:
  """Sum of `values` where `mask` is non-zero; NaNs under the mask's zeros do not leak in."""
  values, mask = jnp.asarray(values), jnp.asarray(mask)
  return (jnp.where(mask.astype(bool), values, 0) * mask).sum(axis=axis)


def masked_mean(values: ArrayLike, mask: ArrayLike, axis: int | None = None) -> jax.Array:
  """verl's masked mean: the masked sum over (mask count + 1e-8), so an empty mask gives 0."""
  return masked_sum(values, mask, axis) / (jnp.asarray(mask).sum(axis=axis) + 1e-8)


def masked_var(values: ArrayLike, mask: ArrayLike, unbiased: bool = True) -> jax.Array:
  """Variance of the masked entries (Bessel-corrected by default).

  verl raises when fewer than two entries are valid; in-graph that cannot raise, and the
  result is inf or NaN instead.
  """
  values = jnp.asarray(values)
  var = masked_mean(jnp.square(values - masked_mean(values, mask)), mask)
  if unbiased:
    n = jnp.asarray(mask).sum()
    var = var * (n / (n - 1))
  return var


def masked_whiten(values: ArrayLike, mask: ArrayLike, shift_mean: bool = True) -> jax.Array:
  """(values - mean) / sqrt(var + 1e-8) with masked statistics, applied to every entry.

  The output is not zeroed where `mask` is 0, exactly as in verl.
  """
  values = jnp.asarray(values)
  mean = masked_mean(values, mask)
  whitened = (values - mean) * jax.lax.rsqrt(masked_var(values, mask) + 1e-8)
  return whitened + mean if not shift_mean else whitened


def index_from_uids(uids: np.ndarray) -> np.ndarray:
  """Host helper: verl-style uid labels [b] -> int32 group ids in [0, b) for the estimators."""
  return np.unique(np.asarray(uids), return_inverse=True)[1].astype(np.int32).reshape(-1)


def _f32(x: ArrayLike) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def compute_gae_advantage_return(
    token_level_rewards: ArrayLike,
    values: ArrayLike,
    response_mask: ArrayLike,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation (verl "gae"), advantages whitened over the whole batch.

  With delta_t = r_t + gamma * V_{t+1} - V_t, GAE is A_t = delta_t + gamma * lam * A_{t+1},
  run backwards from A_R = V_R = 0. Positions where the mask is 0 (padding, tool or observation
  tokens) are skipped: they neither bootstrap nor accumulate, so the running V_{t+1} and A_{t+1}
  pass through them unchanged, and the output there is the carried A (0 after the last valid
  token). Returns are the raw advantages plus `values`; advantages are then whitened with the
  masked mean and unbiased masked variance of the batch (`masked_whiten`).

  Args:
    token_level_rewards: [b, r] rewards.
    values: [b, r] critic values of the sampling policy.
    response_mask: [b, r], 1 on tokens the policy produced.
    gamma: discount.
    lam: GAE lambda.

  Returns:
    (advantages_br, returns_br), float32.
  """
  reward_rb, value_rb, mask_rb = (_f32(x).T for x in (token_level_rewards, values, response_mask))

  def step(carry, x):
    next_value_b, last_gae_b = carry
    reward_b, value_b, mask_b = x
    delta_b = reward_b + gamma * next_value_b - value_b
    gae_b = delta_b + gamma * lam * last_gae_b
    # A blend rather than a select, so that non-binary masks weigh in as they do in verl.
    next_value_b = value_b * mask_b + (1 - mask_b) * next_value_b
    last_gae_b = gae_b * mask_b + (1 - mask_b) * last_gae_b
    return (next_value_b, last_gae_b), last_gae_b

  zeros_b = jnp.zeros(reward_rb.shape[1], jnp.float32)
  _, adv_rb = jax.lax.scan(step, (zeros_b, zeros_b), (reward_rb, value_rb, mask_rb), reverse=True)
  adv_br = adv_rb.T
  return masked_whiten(adv_br, mask_rb.T), adv_br + value_rb.T


def _group_mean_count(score_b: jax.Array, index_b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-row mean of its group's scores and the group's size, both [b] (group ids < b)."""
  b = score_b.shape[0]
  count_g = jax.ops.segment_sum(jnp.ones_like(score_b), index_b, num_segments=b)
  sum_g = jax.ops.segment_sum(score_b, index_b, num_segments=b)
  count_b = count_g[index_b]
  return sum_g[index_b] / jnp.maximum(count_b, 1), count_b


def compute_grpo_outcome_advantage(
    token_level_rewards: ArrayLike,
    response_mask: ArrayLike,
    index: ArrayLike,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """GRPO (verl "grpo"): each row's score (its rewards summed over the whole row) normalised in
  its group, (score - mean) / (std + epsilon), broadcast over the row's valid tokens.

  std is the unbiased (n - 1) standard deviation, as torch.std. A group of one gets mean 0 and
  std 1, so its advantage is score / (1 + epsilon); a group whose scores are all equal gets 0.
  With `norm_adv_by_std_in_grpo=False` (Dr.GRPO) the division is skipped.

  Args:
    token_level_rewards: [b, r] rewards.
    response_mask: [b, r].
    index: [b] int group ids in [0, b) (rows sampled from one prompt share an id).
    epsilon: added to std.
    norm_adv_by_std_in_grpo: divide by the group std.

  Returns:
    (advantages_br, returns_br): the same array twice, float32.
  """
  score_b = _f32(token_level_rewards).sum(-1)
  index_b = jnp.asarray(index, jnp.int32)
  mean_b, count_b = _group_mean_count(score_b, index_b)
  grouped_b = count_b > 1
  mean_b = jnp.where(grouped_b, mean_b, 0.0)
  if norm_adv_by_std_in_grpo:
    sq_dev_g = jax.ops.segment_sum(jnp.square(score_b - mean_b), index_b, num_segments=score_b.shape[0])
    std_b = jnp.sqrt(sq_dev_g[index_b] / jnp.maximum(count_b - 1, 1))
    std_b = jnp.where(grouped_b, std_b, 1.0)
    score_b = (score_b - mean_b) / (std_b + epsilon)
  else:
    score_b = score_b - mean_b
  adv_br = score_b[:, None] * _f32(response_mask)
  return adv_br, adv_br


def compute_rloo_outcome_advantage(
    token_level_rewards: ArrayLike,
    response_mask: ArrayLike,
    index: ArrayLike,
    epsilon: float = 1e-6,
) -> tuple[jax.Array, jax.Array]:
  """RLOO (verl "rloo"): score minus the mean of the *other* scores in its group, over valid tokens.

  Computed as verl does, n / (n - 1) * (score - group mean). A group of one keeps its raw score
  (no baseline, not 0). `epsilon` is unused, as in verl; it is kept for a uniform call.

  Args:
    token_level_rewards: [b, r] rewards.
    response_mask: [b, r].
    index: [b] int group ids in [0, b).
    epsilon: unused.

  Returns:
    (advantages_br, returns_br): the same array twice, float32.
  """
  del epsilon
  score_b = _f32(token_level_rewards).sum(-1)
  mean_b, count_b = _group_mean_count(score_b, jnp.asarray(index, jnp.int32))
  nm1_b = jnp.maximum(count_b - 1, 1)
  loo_b = score_b * count_b / nm1_b - mean_b * count_b / nm1_b
  adv_br = jnp.where(count_b > 1, loo_b, score_b)[:, None] * _f32(response_mask)
  return adv_br, adv_br


def compute_reinforce_plus_plus_outcome_advantage(
    token_level_rewards: ArrayLike,
    response_mask: ArrayLike,
    gamma: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """REINFORCE++ (verl "reinforce_plus_plus"): discounted reward-to-go, whitened over the batch.

  G_t = r_t + gamma * G_{t+1} on valid tokens; masked positions return 0 and pass the running
  G through unchanged (so rewards reach back past observation spans). Advantages are
  `masked_whiten(G)` zeroed off the mask. verl reads gamma from its config; here it is an argument.

  Returns:
    (advantages_br, returns_br), float32.
  """
  reward_rb, mask_rb = _f32(token_level_rewards).T, _f32(response_mask).T

  def step(running_b, x):
    reward_b, mask_b = x
    new_b = reward_b + gamma * running_b
    return new_b * mask_b + running_b * (1 - mask_b), new_b * mask_b

  _, ret_rb = jax.lax.scan(step, jnp.zeros(reward_rb.shape[1], jnp.float32), (reward_rb, mask_rb),
                           reverse=True)
  ret_br, mask_br = ret_rb.T, mask_rb.T
  return masked_whiten(ret_br, mask_br) * mask_br, ret_br


ADV_ESTIMATORS: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "gae": compute_gae_advantage_return,
    "grpo": compute_grpo_outcome_advantage,
    "rloo": compute_rloo_outcome_advantage,
    "reinforce_plus_plus": compute_reinforce_plus_plus_outcome_advantage,
}


def get_adv_estimator_fn(name: str) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """The estimator registered under verl's `algorithm.adv_estimator` name."""
  if name not in ADV_ESTIMATORS:
    raise ValueError(f"Unknown advantage estimator {name!r}; known: {sorted(ADV_ESTIMATORS)}")
  return ADV_ESTIMATORS[name]


def compute_advantage(name: str, rewards_br: jax.Array, values_br: jax.Array | None, mask_br: jax.Array,
                      group_b: jax.Array, *, gamma: float = 1.0, lam: float = 1.0,
                      norm_adv_by_std_in_grpo: bool = True) -> tuple[jax.Array, jax.Array]:
  """(advantages, returns) [B, R] of the estimator `name`, each given the inputs it reads:
  values (gae), group ids (grpo, rloo), gamma / lam (gae), gamma (reinforce_plus_plus)."""
  estimator = get_adv_estimator_fn(name)
  if name == "gae":
    return estimator(rewards_br, values_br, mask_br, gamma, lam)
  if name == "grpo":
    return estimator(rewards_br, mask_br, group_b, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo)
  if name == "rloo":
    return estimator(rewards_br, mask_br, group_b)
  return estimator(rewards_br, mask_br, gamma)
