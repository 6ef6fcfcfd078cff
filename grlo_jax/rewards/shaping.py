"""Reward shaping (all off by default, as in GRLO) and the score's placement on tokens.

Terms added to each row's score, on [B] / [B, R] arrays, jittable:

- over-long (DAPO's soft overlong punishment): with L = max_length and a buffer of W tokens,
  a response of length l gets min(0, -(l - (L - W)) / W * factor): 0 up to L - W, then a
  linear ramp down to -factor at L.
- truncation: a fixed -penalty for a response without a stop token (it ran out of length).
- length: -coef * l / L.

Length l counts the response's valid tokens, its stop token included (verl's
`valid_response_length`); L is the maximum response length (the rollout's R by default).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ShapingConfig:
  """Shaping knobs; the defaults turn every term off.

  overlong_buffer_len: W of the over-long ramp (DAPO: `overlong_buffer.len`); 0 is off.
  overlong_penalty_factor: the ramp's depth at max length (DAPO: `penalty_factor`).
  truncation_penalty: subtracted from a truncated response's score; 0 is off.
  length_penalty_coef: coef of -coef * length / max_length; 0 is off.
  """

  overlong_buffer_len: int = 0
  overlong_penalty_factor: float = 1.0
  truncation_penalty: float = 0.0
  length_penalty_coef: float = 0.0


def response_lengths(response_mask_br: jax.Array) -> jax.Array:
  """Valid tokens per row [B] (int32), the stop token included."""
  return response_mask_br.astype(bool).sum(axis=1, dtype=jnp.int32)


def is_truncated(response_ids_br: jax.Array, response_mask_br: jax.Array,
                 eos_ids: tuple[int, ...]) -> jax.Array:
  """True [B] where a response holds no stop token (an empty one too)."""
  stop_br = jnp.isin(response_ids_br.astype(jnp.int32), jnp.asarray(eos_ids, jnp.int32))
  return ~jnp.any(stop_br & response_mask_br.astype(bool), axis=1)


def overlong_penalty(length_b: jax.Array, max_length: int, buffer_len: int,
                     penalty_factor: float = 1.0) -> jax.Array:
  """DAPO's soft overlong punishment [B] (float32, <= 0); zeros when `buffer_len` is 0."""
  if buffer_len <= 0:
    return jnp.zeros(length_b.shape, jnp.float32)
  exceed_b = length_b.astype(jnp.float32) - (max_length - buffer_len)
  return jnp.minimum(-exceed_b / buffer_len * penalty_factor, 0.0)


def truncation_penalty(truncated_b: jax.Array, penalty: float) -> jax.Array:
  """-penalty [B] (float32) on truncated rows, 0 elsewhere."""
  return -penalty * truncated_b.astype(jnp.float32)


def length_penalty(length_b: jax.Array, max_length: int, coef: float) -> jax.Array:
  """-coef * length / max_length [B] (float32)."""
  return -coef * length_b.astype(jnp.float32) / max_length


def shape_scores(score_b: jax.Array, response_ids_br: jax.Array, response_mask_br: jax.Array,
                 eos_ids: tuple[int, ...], cfg: ShapingConfig,
                 max_length: int | None = None) -> jax.Array:
  """`score_b` plus the enabled terms [B] (float32); `max_length` defaults to R (static)."""
  max_length = response_ids_br.shape[1] if max_length is None else max_length
  length_b = response_lengths(response_mask_br)
  out_b = score_b.astype(jnp.float32)
  if cfg.overlong_buffer_len > 0:
    out_b += overlong_penalty(length_b, max_length, cfg.overlong_buffer_len, cfg.overlong_penalty_factor)
  if cfg.truncation_penalty:
    out_b += truncation_penalty(is_truncated(response_ids_br, response_mask_br, eos_ids),
                                cfg.truncation_penalty)
  if cfg.length_penalty_coef:
    out_b += length_penalty(length_b, max_length, cfg.length_penalty_coef)
  return out_b


def token_level_rewards(score_b: jax.Array, response_mask_br: jax.Array) -> jax.Array:
  """[B, R] float32: each row's score at its last valid response token, zeros elsewhere.

  verl writes the score at index `valid_length - 1`, which for an empty response is -1, i.e.
  the last (padded) position. Here an empty response (no valid token) gets an all-zero row:
  there is no token to credit, and no padded position carries reward into GAE's recursion
  (the same as `rl.step`'s `* (lengths > 0)`).
  """
  mask_br = response_mask_br.astype(bool)
  r = mask_br.shape[1]
  last_b = jnp.max(jnp.where(mask_br, jnp.arange(r), -1), axis=1)  # -1: no valid token
  return jax.nn.one_hot(last_b, r, dtype=jnp.float32) * score_b.astype(jnp.float32)[:, None]
