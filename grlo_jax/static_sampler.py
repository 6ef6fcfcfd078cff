"""The static sampler: prefill every row, then a `lax.while_loop` of one-token decode steps over
a KV cache of all B rows, until every row has stopped or `max_new_tokens` are out."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from grlo_jax import sharding
from grlo_jax.decoding import SampleOutput, SamplingParams, finish, is_stop, sample_logits
from grlo_jax.models import KVCache, Transformer


@struct.dataclass
class _LoopState:
  step: jax.Array  # int32 scalar: tokens sampled so far
  tokens_bn: jax.Array
  logp_bn: jax.Array
  done_b: jax.Array
  cache: KVCache
  rng: jax.Array


def _generate(graphdef: nnx.GraphDef, state: nnx.State, input_ids_bp: jax.Array,
              attention_mask_bp: jax.Array, rng: jax.Array, p: SamplingParams) -> SampleOutput:
  model = nnx.merge(graphdef, state)
  b, prompt_len = input_ids_bp.shape
  n = p.max_new_tokens
  cache = KVCache.init(model.cfg, b, prompt_len + n, p.cache_dtype)
  unroll = p.unroll_decode if p.unroll_decode is not None else jax.default_backend() == "cpu"
  layers = model.decode_layers() if unroll else None
  if unroll:
    cache = cache.unstack()

  # Prefill; only the last position's logits are needed (prompts are left-padded).
  x_bpd, cache = model.hidden(input_ids_bp, attention_mask_bp, cache=cache, layers=layers)
  logits_bv = model.head(x_bpd[:, -1:])[:, 0]
  rng, sub = jax.random.split(rng)
  tok_b, logp_b = sample_logits(logits_bv, sub, p)
  done_b = is_stop(tok_b, p)
  tokens_bn = jnp.full((b, n), p.pad_token_id, jnp.int32).at[:, 0].set(tok_b)
  logp_bn = jnp.zeros((b, n), jnp.float32).at[:, 0].set(logp_b)
  init = _LoopState(step=jnp.ones((), jnp.int32), tokens_bn=sharding.constrain(tokens_bn, ("batch", None)),
                    logp_bn=logp_bn, done_b=done_b, cache=cache, rng=rng)

  def cond(s: _LoopState) -> jax.Array:
    return (s.step < n) & ~jnp.all(s.done_b)

  def body(s: _LoopState) -> _LoopState:
    last_b1 = jax.lax.dynamic_slice_in_dim(s.tokens_bn, s.step - 1, 1, axis=1)
    x_b1d, cache = model.hidden(last_b1, jnp.ones_like(last_b1, bool), cache=s.cache, layers=layers)
    rng, sub = jax.random.split(s.rng)
    tok_b, logp_b = sample_logits(model.head(x_b1d)[:, 0], sub, p)
    tok_b = jnp.where(s.done_b, p.pad_token_id, tok_b)
    logp_b = jnp.where(s.done_b, 0.0, logp_b)
    return _LoopState(step=s.step + 1,
                      tokens_bn=jax.lax.dynamic_update_slice_in_dim(s.tokens_bn, tok_b[:, None], s.step, 1),
                      logp_bn=jax.lax.dynamic_update_slice_in_dim(s.logp_bn, logp_b[:, None], s.step, 1),
                      done_b=s.done_b | is_stop(tok_b, p), cache=cache, rng=rng)

  final = jax.lax.while_loop(cond, body, init)
  return finish(final.tokens_bn, final.logp_bn, p, final.step)


_generate_jit = jax.jit(_generate, static_argnames=("graphdef", "p"))


def generate(model: Transformer, input_ids_bp: jax.Array, attention_mask_bp: jax.Array, rng: jax.Array,
             params: SamplingParams) -> SampleOutput:
  """All B rows of a left-padded prompt batch [B, P] decoded at once."""
  graphdef, state = nnx.split(model)
  return _generate_jit(graphdef, state, input_ids_bp, attention_mask_bp, rng, params)
