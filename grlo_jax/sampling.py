"""In-graph generation, the public entry point: `generate` samples a left-padded prompt batch
with the static sampler (all rows at once, `static_sampler`) or over `max_num_seqs` slots with
continuous batching (`rollout`). Everything runs inside one jitted function, so the RL step can
call it from its own jit.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from grlo_jax import rollout
from grlo_jax.decoding import (SampleOutput, SamplingParams, argmax, categorical, finish, is_stop,  # noqa: F401
                               sample_logits)
from grlo_jax.models import Transformer


def generate(model: Transformer, input_ids: jax.Array, attention_mask: jax.Array, *,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_token_id: int | Sequence[int] | None = None, stop_token_ids: Sequence[int] = (),
             pad_token_id: int | None = None, rng: jax.Array | None = None,
             cache_dtype: str | None = None, max_num_seqs: int | None = None,
             prefill_chunk: int = 128) -> SampleOutput:
  """Sample up to `max_new_tokens` for a left-padded prompt batch `[B, P]`.

  `max_num_seqs=S < B` decodes over S slots with continuous batching (`grlo_jax.rollout`): rows
  wait in a queue, a slot whose row stops takes the next one (prefilled `prefill_chunk` tokens at
  a time). None (or S >= B) decodes all rows at once. Works eagerly (compiled once per model
  structure and knobs) and inside another jitted function.
  """
  eos = () if eos_token_id is None else (
      (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id))
  if pad_token_id is None:
    pad_token_id = model.cfg.pad_token_id if model.cfg.pad_token_id is not None else 0
  params = SamplingParams(max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=int(top_k),
                          top_p=float(top_p), stop_token_ids=tuple(dict.fromkeys(eos + tuple(stop_token_ids))),
                          pad_token_id=int(pad_token_id), cache_dtype=cache_dtype,
                          max_num_seqs=max_num_seqs or None, prefill_chunk=int(prefill_chunk))
  rng = jax.random.key(0) if rng is None else rng
  return generate_with_params(model, jnp.asarray(input_ids), jnp.asarray(attention_mask), rng, params)


def generate_with_params(model: Transformer, input_ids_bp: jax.Array, attention_mask_bp: jax.Array,
                         rng: jax.Array, params: SamplingParams) -> SampleOutput:
  """`generate` with the knobs in one static `SamplingParams` (what the RL step uses)."""
  return rollout.generate(model, input_ids_bp, attention_mask_bp, rng, params)[0]
