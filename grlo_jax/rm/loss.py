"""Bradley-Terry pairwise loss and pair metrics: pure functions on scores [B] (float32).

P(chosen > rejected) = sigmoid(r_chosen - r_rejected - margin) (Bradley & Terry 1952; the margin
term as Llama 2's reward models, 0 = plain BT). The loss is its negative log-likelihood,
`softplus(-(d - m))`, stable for any score difference. `weight_b` (0 or 1) masks filler rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bradley_terry(chosen_b: jax.Array, rejected_b: jax.Array, margin_b: jax.Array | None = None) -> jax.Array:
  """-log sigmoid(r_chosen - r_rejected - margin) per pair [B], float32."""
  d_b = chosen_b.astype(jnp.float32) - rejected_b.astype(jnp.float32)
  if margin_b is not None:
    d_b = d_b - margin_b.astype(jnp.float32)
  return jax.nn.softplus(-d_b)


def pair_metrics(chosen_b: jax.Array, rejected_b: jax.Array, weight_b: jax.Array,
                 margin_b: jax.Array | None = None) -> dict[str, jax.Array]:
  """Weighted sums over the pairs (divide by `count`): loss, correct (chosen strictly higher),
  margin (chosen - rejected), chosen and rejected scores. Sums, so micro-batches add exactly."""
  w_b = weight_b.astype(jnp.float32)
  c_b, r_b = chosen_b.astype(jnp.float32), rejected_b.astype(jnp.float32)
  return {"loss": jnp.sum(w_b * bradley_terry(c_b, r_b, margin_b)),
          "pair_accuracy": jnp.sum(w_b * (c_b > r_b)),
          "margin": jnp.sum(w_b * (c_b - r_b)),
          "score/chosen_mean": jnp.sum(w_b * c_b),
          "score/rejected_mean": jnp.sum(w_b * r_b),
          "count": jnp.sum(w_b)}


def means(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """`pair_metrics` sums (added over micro-batches or batches) -> means over the pairs."""
  n = jnp.maximum(sums["count"], 1.0)
  return {k: v / n for k, v in sums.items() if k != "count"}
