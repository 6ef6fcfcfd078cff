"""PPO losses: loss aggregation, clipped policy loss with dual clip, clipped value loss, KL
estimators, entropy and token log-probs from logits.

Names, arguments and numbers follow verl 0.9.1 (`verl.trainer.ppo.core_algos`,
`verl.utils.torch_functional`). Inputs may be NumPy; outputs are jax arrays; everything jits with
the string arguments static.

Gradient accumulation. A mini-batch split into micro-batches must train on the mini-batch's loss,
not on the mean of micro-batch losses (those differ as soon as micro-batches hold different
numbers of tokens). verl handles this by normalising every micro-batch loss with mini-batch
totals; so does this module. The RL step does, per mini-batch (mask_br is the whole mini-batch's
response mask, before it is split):

  info = global_batch_info(mask_br)             # token count and non-empty row count
  for each micro-batch k (e.g. a lax.scan):
    pg_loss_k, *_ = compute_policy_loss(..., loss_agg_mode=mode, **info)
    vf_loss_k, _ = compute_value_loss(..., loss_agg_mode=mode, **info)
    grads += grad(pg_loss_k)                    # plain sum over k: no division by the count of k
  loss = sum_k pg_loss_k                        # equals agg_loss over the whole mini-batch

`dp_size` stays 1 under jit: a sharded batch is one global array, so the denominators in `info`
are already global. verl's trainer passes `global_batch_size = ppo_mini_batch_size` (every row),
while `global_batch_info` counts rows with at least one valid token, which is what makes the sum
equal the unsplit loss; the two differ only when a row's mask is empty.
"""

import jax
import jax.numpy as jnp

from grlo_jax.rl.advantages import masked_mean, masked_sum

ArrayLike = jax.typing.ArrayLike
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                  "seq-mean-token-sum-norm")
KL_PENALTIES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


def global_batch_info(loss_mask: ArrayLike) -> dict[str, jax.Array]:
  """Denominators of a whole mini-batch, to pass as `**info` to each micro-batch's loss.

  Args:
    loss_mask: [b, r] mask of the whole mini-batch.

  Returns:
    {"batch_num_tokens": valid tokens, "global_batch_size": rows with any valid token}.
  """
  mask_br = jnp.asarray(loss_mask, jnp.float32)
  return {"batch_num_tokens": mask_br.sum(),
          "global_batch_size": (mask_br.sum(-1) > 0).astype(jnp.float32).sum()}


def agg_loss(
    loss_mat: ArrayLike,
    loss_mask: ArrayLike,
    loss_agg_mode: str,
    dp_size: int = 1,
    batch_num_tokens: ArrayLike | None = None,
    global_batch_size: ArrayLike | None = None,
    loss_scale_factor: float | None = None,
) -> jax.Array:
  """Aggregates a [b, r] loss matrix into a scalar, as verl's agg_loss.

  Modes (numerators are over this call's rows; default denominators in brackets):
    token-mean: sum of valid entries / batch_num_tokens [valid tokens here].
    token-sum: sum of valid entries.
    seq-mean-token-sum: sum over rows of each row's valid sum / global_batch_size
      [rows here with any valid token; empty rows are left out].
    seq-mean-token-mean: as above with each row's valid mean (its sum / (count + 1e-8)).
    seq-mean-token-sum-norm: seq-mean-token-sum / loss_scale_factor [r, the padded length].
  Every mode is finally multiplied by dp_size, which undoes the average over ranks.

  Args:
    loss_mat: [b, r] per-token losses.
    loss_mask: [b, r].
    loss_agg_mode: one of LOSS_AGG_MODES.
    dp_size: data-parallel ranks whose gradients get averaged (1 under jit).
    batch_num_tokens: global token count, for token-mean (see the module docstring).
    global_batch_size: global row count, for the seq-mean modes.
    loss_scale_factor: fixed divisor for seq-mean-token-sum-norm.
  """
  loss_br = jnp.asarray(loss_mat)
  mask_br = jnp.asarray(loss_mask, jnp.float32)   # float32 so that token counts stay exact
  if loss_agg_mode == "token-mean":
    if batch_num_tokens is None:
      if dp_size > 1:
        raise ValueError("(global) batch_num_tokens is required when dp_size > 1")
      batch_num_tokens = mask_br.sum()
    return masked_sum(loss_br, mask_br) / batch_num_tokens * dp_size
  if loss_agg_mode == "token-sum":
    return masked_sum(loss_br, mask_br) * dp_size
  if loss_agg_mode not in LOSS_AGG_MODES:
    raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode!r}; expected one of {LOSS_AGG_MODES}")
  seq_loss_b = (loss_br * mask_br).sum(-1)
  count_b = mask_br.sum(-1)
  if loss_agg_mode == "seq-mean-token-mean":
    seq_loss_b = seq_loss_b / (count_b + 1e-8)
  seq_mask_b = (count_b > 0).astype(jnp.float32)
  if global_batch_size is None:
    if dp_size > 1:
      raise ValueError("global_batch_size is required when dp_size > 1")
    global_batch_size = seq_mask_b.sum()
  loss = masked_sum(seq_loss_b, seq_mask_b) / global_batch_size * dp_size
  if loss_agg_mode == "seq-mean-token-sum-norm":
    loss = loss / (loss_br.shape[-1] if loss_scale_factor is None else loss_scale_factor)
  return loss


def compute_policy_loss(
    old_log_prob: ArrayLike,
    log_prob: ArrayLike,
    advantages: ArrayLike,
    response_mask: ArrayLike,
    cliprange: float = 0.2,
    cliprange_low: float | None = None,
    cliprange_high: float | None = None,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    *,
    dp_size: int = 1,
    batch_num_tokens: ArrayLike | None = None,
    global_batch_size: ArrayLike | None = None,
    loss_scale_factor: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """PPO clipped surrogate with dual clip (verl's vanilla policy loss).

  ratio = exp(clamp(log_prob - old_log_prob, -20, 20)). Per token the loss is
  max(-A * ratio, -A * clip(ratio, 1 - cliprange_low, 1 + cliprange_high)), and where A < 0 it is
  further capped at -A * clip_ratio_c (dual clip), then aggregated by `agg_loss`; the keyword-only
  arguments are passed through to it.

  Returns:
    (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower): the loss, the fraction of valid tokens
    where the ratio clip binds, the masked mean of old - new log-prob (after the clamp), and the
    fraction where the dual clip binds. The three metrics are masked means over this call's rows.
  """
  if not clip_ratio_c > 1.0:
    raise ValueError(f"clip_ratio_c must be > 1.0 for dual-clip PPO, got {clip_ratio_c}")
  cliprange_low = cliprange if cliprange_low is None else cliprange_low
  cliprange_high = cliprange if cliprange_high is None else cliprange_high
  adv_br, mask_br = jnp.asarray(advantages), jnp.asarray(response_mask)
  # The clamp keeps exp finite for tokens whose probability collapsed or exploded since sampling.
  log_ratio_br = jnp.clip(jnp.asarray(log_prob) - jnp.asarray(old_log_prob), -20.0, 20.0)
  ratio_br = jnp.exp(log_ratio_br)
  ppo_kl = masked_mean(-log_ratio_br, mask_br)

  unclipped_br = -adv_br * ratio_br
  clipped_br = -adv_br * jnp.clip(ratio_br, 1 - cliprange_low, 1 + cliprange_high)
  clip_loss_br = jnp.maximum(unclipped_br, clipped_br)
  pg_clipfrac = masked_mean((clipped_br > unclipped_br).astype(jnp.float32), mask_br)

  dual_br = -adv_br * clip_ratio_c
  negative_br = adv_br < 0
  pg_clipfrac_lower = masked_mean(((clip_loss_br > dual_br) & negative_br).astype(jnp.float32), mask_br)
  pg_loss_br = jnp.where(negative_br, jnp.minimum(dual_br, clip_loss_br), clip_loss_br)
  pg_loss = agg_loss(pg_loss_br, mask_br, loss_agg_mode, dp_size=dp_size, batch_num_tokens=batch_num_tokens,
                     global_batch_size=global_batch_size, loss_scale_factor=loss_scale_factor)
  return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower


def compute_value_loss(
    vpreds: ArrayLike,
    returns: ArrayLike,
    values: ArrayLike,
    response_mask: ArrayLike,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
    dp_size: int = 1,
    batch_num_tokens: ArrayLike | None = None,
    global_batch_size: ArrayLike | None = None,
    loss_scale_factor: float | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Clipped value loss: 0.5 * agg(max((v - R)^2, (clip(v, V -+ c) - R)^2)).

  Args:
    vpreds: [b, r] current critic predictions.
    returns: [b, r] targets.
    values: [b, r] critic values at sampling time (the clip centre).
    response_mask: [b, r].
    cliprange_value: c.
    loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor: see agg_loss.

  Returns:
    (vf_loss, vf_clipfrac): the loss and the masked fraction of tokens where the clipped term is larger.
  """
  vpred_br, ret_br, value_br = jnp.asarray(vpreds), jnp.asarray(returns), jnp.asarray(values)
  # min-then-max as verl's clip_by_value (jnp.clip orders the two the other way round).
  vpred_clipped_br = jnp.maximum(jnp.minimum(vpred_br, value_br + cliprange_value), value_br - cliprange_value)
  loss1_br = jnp.square(vpred_br - ret_br)
  loss2_br = jnp.square(vpred_clipped_br - ret_br)
  vf_loss = 0.5 * agg_loss(jnp.maximum(loss1_br, loss2_br), response_mask, loss_agg_mode, dp_size=dp_size,
                           batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size,
                           loss_scale_factor=loss_scale_factor)
  vf_clipfrac = masked_mean((loss2_br > loss1_br).astype(jnp.float32), response_mask)
  return vf_loss, vf_clipfrac


def _kl_forward(logp: jax.Array, ref_logp: jax.Array, kind: str) -> jax.Array:
  if kind in ("kl", "k1"):
    return logp - ref_logp
  if kind == "abs":
    return jnp.abs(logp - ref_logp)
  if kind in ("mse", "k2"):
    return 0.5 * jnp.square(logp - ref_logp)
  if kind in ("low_var_kl", "k3"):
    # Schulman's k3 = exp(ref - logp) - (ref - logp) - 1, clamped twice for stability.
    log_ratio = jnp.clip(ref_logp - logp, -20.0, 20.0)
    return jnp.clip(jnp.exp(log_ratio) - log_ratio - 1, -10.0, 10.0)
  if kind == "full":
    raise NotImplementedError("kl_penalty='full' needs the whole vocabulary's log-probs")
  raise ValueError(f"Unknown kl_penalty {kind!r}; expected one of {KL_PENALTIES}, optionally with '+'")


def kl_penalty(logprob: ArrayLike, ref_logprob: ArrayLike, kl_penalty: str) -> jax.Array:
  """Per-token KL estimate between the policy and the reference (http://joschu.net/blog/kl-approx.html).

  "kl"/"k1": logp - ref; "abs": |logp - ref|; "mse"/"k2": 0.5 (logp - ref)^2;
  "low_var_kl"/"k3": k3 with the log-ratio clamped to +-20 and the result to +-10.
  A trailing "+" (e.g. "k3+") keeps the value of the named estimator but takes the gradient of
  k2, which is the unbiased one (straight-through).
  """
  logp, ref_logp = jnp.asarray(logprob), jnp.asarray(ref_logprob)
  forward = _kl_forward(logp, ref_logp, kl_penalty.removesuffix("+"))
  if not kl_penalty.endswith("+"):
    return forward
  backward = 0.5 * jnp.square(logp - ref_logp)
  return backward - jax.lax.stop_gradient(backward) + jax.lax.stop_gradient(forward)


def entropy_from_logits(logits: ArrayLike) -> jax.Array:
  """Entropy of softmax(logits) over the last axis, in float32: logsumexp(x) - sum(softmax(x) x).

  Args:
    logits: [..., v].

  Returns:
    [...] float32.
  """
  logits_xv = jnp.asarray(logits).astype(jnp.float32)
  return jax.nn.logsumexp(logits_xv, axis=-1) - (jax.nn.softmax(logits_xv, axis=-1) * logits_xv).sum(-1)


def logprobs_from_logits(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """log softmax(logits)[label] in float32, as logits[label] - logsumexp(logits).

  Only the per-position logsumexp is reduced over the vocabulary; the full log-softmax is never
  formed.

  Args:
    logits: [..., v].
    labels: [...] int token ids.

  Returns:
    [...] float32.
  """
  logits_xv = jnp.asarray(logits).astype(jnp.float32)
  labels_x1 = jnp.asarray(labels)[..., None].astype(jnp.int32)
  label_logit_x = jnp.take_along_axis(logits_xv, labels_x1, axis=-1)[..., 0]
  return label_logit_x - jax.nn.logsumexp(logits_xv, axis=-1)
