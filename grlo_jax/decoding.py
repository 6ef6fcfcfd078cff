"""What both samplers share: the static knobs, token selection from logits, the output.

The static sampler (`static_sampler`) and the rollout engine (`rollout`) build on this module;
`sampling` is the public entry point over both.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Static sampling knobs (verl names). `temperature=0` is greedy; `top_k<=0` and `top_p>=1` are off."""

  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  stop_token_ids: tuple[int, ...] = ()  # EOS and any other stop tokens
  pad_token_id: int = 0  # written after a row stops
  cache_dtype: str | None = None  # default: the model's compute dtype
  # Decode over per-layer weight/cache buffers (a Python loop) instead of a layer scan; None: on
  # CPU only, where scan slices cost copies (docs/benchmarks.md). Costs one weight copy per call.
  unroll_decode: bool | None = None
  # Continuous batching (`grlo_jax.rollout`): this many decode slots over the queue of rows; None
  # (or >= the batch) decodes all rows at once, the static sampler here.
  max_num_seqs: int | None = None
  prefill_chunk: int = 128  # tokens a refill's prefill processes at a time (per prompt)


@struct.dataclass
class SampleOutput:
  tokens: jax.Array  # [B, N] int32, pad after a row's stop token
  mask: jax.Array  # [B, N] bool, True up to and including the stop token
  logprobs: jax.Array  # [B, N] float32, log softmax(logits / T) of each sampled token (0 when masked)
  lengths: jax.Array  # [B] int32 = mask.sum(1)

  def __getitem__(self, key: str) -> jax.Array:  # also usable as a dict
    return getattr(self, key)


def sample_logits(logits_bv: jax.Array, rng: jax.Array, p: SamplingParams) -> tuple[jax.Array, jax.Array]:
  """Sample one token per row; returns (token_b, logprob_b under softmax(logits / T)). `rng` is
  one key for the batch, or [B] keys, one a row (each row's draw then depends on its key only)."""
  logits_bv = logits_bv.astype(jnp.float32)
  if p.temperature <= 0.0:
    tok_b = argmax(logits_bv)
    logp_bv = jax.nn.log_softmax(logits_bv, axis=-1)
  else:
    logits_bv = logits_bv / p.temperature
    logp_bv = jax.nn.log_softmax(logits_bv, axis=-1)
    filtered_bv = logits_bv
    if p.top_k > 0:
      kth_b1 = jax.lax.top_k(logits_bv, p.top_k)[0][:, -1:]
      filtered_bv = jnp.where(logits_bv < kth_b1, -jnp.inf, filtered_bv)
    if p.top_p < 1.0:
      # Keep the smallest prefix of tokens (by probability) whose mass reaches top_p.
      sorted_bv = jnp.sort(filtered_bv, axis=-1)[:, ::-1]
      probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
      before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv  # mass strictly above each token
      keep = jnp.sum(before_bv < p.top_p, axis=-1, keepdims=True)  # >= 1
      cutoff_b1 = jnp.take_along_axis(sorted_bv, keep - 1, axis=-1)
      filtered_bv = jnp.where(filtered_bv < cutoff_b1, -jnp.inf, filtered_bv)
    tok_b = categorical(rng, filtered_bv)
  tok_b = tok_b.astype(jnp.int32)
  return tok_b, jnp.take_along_axis(logp_bv, tok_b[:, None], axis=-1)[:, 0]


def argmax(x_bv: jax.Array) -> jax.Array:
  """First index of each row's maximum, as two plain reductions: XLA:CPU runs `jnp.argmax`'s
  (value, index) reduce unvectorised, ~4 ms a decode step for [8, 32000]."""
  v = x_bv.shape[-1]
  hit_bv = x_bv == jnp.max(x_bv, axis=-1, keepdims=True)
  return jnp.minimum(jnp.min(jnp.where(hit_bv, jnp.arange(v, dtype=jnp.int32), v), axis=-1), v - 1)


_BLOCK = 128  # vocabulary block of the two-level draw


def categorical(rng: jax.Array, logits_bv: jax.Array) -> jax.Array:
  """One draw per row from softmax(logits), exact in distribution, by inverse CDF in two levels
  (`rng`: one key, or [B] keys one a row):
  a block of the vocabulary by its mass, then a token inside it. Two uniforms a row, where
  `jax.random.categorical` draws V Gumbels and takes a (value, index) argmax (~7 ms a step on
  XLA:CPU at V=32k, B=8: a sixth of a decode step)."""
  b, v = logits_bv.shape
  g = -(-v // _BLOCK)
  x_bv = jnp.pad(logits_bv, ((0, 0), (0, g * _BLOCK - v)), constant_values=-jnp.inf)
  w_bgc = jnp.exp(x_bv - jnp.max(x_bv, axis=-1, keepdims=True)).reshape(b, g, _BLOCK)
  if rng.ndim == 0:
    u_2b = jax.random.uniform(rng, (2, b))
  else:  # one key a row
    u_2b = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(rng).T
  blk_b = _inverse_cdf(w_bgc.sum(axis=-1), u_2b[0])
  w_bc = jnp.take_along_axis(w_bgc, blk_b[:, None, None], axis=1)[:, 0]
  return blk_b * _BLOCK + _inverse_cdf(w_bc, u_2b[1])


def _inverse_cdf(w_bn: jax.Array, u_b: jax.Array) -> jax.Array:
  """The first index whose cumulative weight exceeds u x total: index i with chance w_i / total."""
  n = w_bn.shape[-1]
  cum_bn = jnp.cumsum(w_bn, axis=-1)
  i_b = jnp.sum(cum_bn <= u_b[:, None] * cum_bn[:, -1:], axis=-1, dtype=jnp.int32)
  # u x total can round up to total: fall back to the last index with weight, never a zero one.
  last_b = jnp.max(jnp.where(w_bn > 0, jnp.arange(n, dtype=jnp.int32), 0), axis=-1)
  return jnp.minimum(i_b, last_b)


def is_stop(tok_b: jax.Array, p: SamplingParams) -> jax.Array:
  """[...] bool: the token is one of `p.stop_token_ids`."""
  stop_b = jnp.zeros(tok_b.shape, bool)
  for s in p.stop_token_ids:
    stop_b |= tok_b == s
  return stop_b


def finish(tokens_bn: jax.Array, logp_bn: jax.Array, p: SamplingParams,
           steps: jax.Array | int | None = None) -> SampleOutput:
  """The output of sampled tokens [B, N]: a row's mask runs through its first stop token; token
  slots from `steps` on (never reached: the loop ended early) are pad."""
  n = tokens_bn.shape[1]
  steps = n if steps is None else steps
  pos_n = jnp.arange(n)
  stop_bn = is_stop(tokens_bn, p) & (pos_n < steps)
  first_stop_b = jnp.min(jnp.where(stop_bn, pos_n, n), axis=1)
  mask_bn = (pos_n[None] <= first_stop_b[:, None]) & (pos_n[None] < steps)
  return SampleOutput(tokens=jnp.where(mask_bn, tokens_bn, p.pad_token_id), mask=mask_bn,
                      logprobs=jnp.where(mask_bn, logp_bn, 0.0), lengths=mask_bn.sum(axis=1, dtype=jnp.int32))
