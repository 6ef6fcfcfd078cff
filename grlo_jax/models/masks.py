"""Which keys each query may attend: the one mask rule every attention implementation follows."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def allowed_mask(q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                 q_offset: jax.Array | int = 0) -> jax.Array:
  """[B, T, S] bool: query t may attend key s (same non-zero segment, causal)."""
  t, s = q_segment_ids_bt.shape[1], kv_segment_ids_bs.shape[1]
  q_slot_bt = jnp.arange(t)[None] + jnp.asarray(q_offset, jnp.int32).reshape(-1, 1)
  causal_bts = jnp.arange(s)[None, None, :] <= q_slot_bt[:, :, None]
  same_bts = q_segment_ids_bt[:, :, None] == kv_segment_ids_bs[:, None, :]
  return causal_bts & same_bts & (kv_segment_ids_bs != 0)[:, None, :]
