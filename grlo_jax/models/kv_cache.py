"""Key/value cache for incremental decoding: one stacked array per K and V.

Layouts: keys [L, B, K, H, S], values [L, B, K, S, H]. (batch, kv head) lead, so attention reads
the cache as it lies (a [B, S, K, H] cache is transposed on every decode step; on XLA:CPU that was
~20% of a step). Keys put the slot axis last: a one-token step's scores q . k then reduce over a
non-minor axis, which XLA:CPU vectorises along the slots (one-token attention ~10% faster than with
H minor, docs/benchmarks.md).

Slots are filled left to right for every row at once (prompts are left-padded), so one scalar
`index` says where the next token goes; `mask_bs` marks slots that hold real tokens and `pos_b`
counts them, giving each row's next RoPE position.

The rollout engine's slot cache (`init(..., per_row=True)`) keeps an `index` [B] instead: each
row (a decode slot) holds its own left-aligned sequence and writes its next token at its own
index; a one-token step then reads only the first `max(index) + 1` slots, rounded up to
`read_block` (`transformer.ragged_decode_attention`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from grlo_jax import sharding
from grlo_jax.models.config import ModelConfig

_KV_NAMES = ("cache_layers", "batch", "act_kv_heads")


@struct.dataclass
class KVCache:
  k_lbkhs: jax.Array
  v_lbksh: jax.Array
  mask_bs: jax.Array  # bool: slot s of row b holds a real token
  pos_b: jax.Array  # int32: real tokens seen so far = next position id
  index: jax.Array  # int32 scalar: next slot to write; [B] with per-row slots
  read_block: int = struct.field(pytree_node=False, default=0)  # per-row: attention length granule

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype: str | None = None, *,
           per_row: bool = False, read_block: int = 128) -> KVCache:
    """An empty cache of `max_len` slots, sharded by logical axes under the current mesh; `dtype`
    defaults to the model's compute dtype. `per_row`: one write index a row (see above)."""
    l, k, h = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    dt = jnp.dtype(dtype or cfg.dtype)
    k_lbkhs = jnp.zeros((l, batch, k, h, max_len), dt)
    v_lbksh = jnp.zeros((l, batch, k, max_len, h), dt)
    return cls(k_lbkhs=sharding.constrain(k_lbkhs, (*_KV_NAMES, None, "cache_seq")),
               v_lbksh=sharding.constrain(v_lbksh, (*_KV_NAMES, "cache_seq", None)),
               mask_bs=jnp.zeros((batch, max_len), bool), pos_b=jnp.zeros((batch,), jnp.int32),
               index=jnp.zeros((batch,) if per_row else (), jnp.int32),
               read_block=read_block if per_row else 0)

  @property
  def max_len(self) -> int:
    return self.mask_bs.shape[1]

  def unstack(self) -> KVCache:
    """The same cache with K and V as tuples of L per-layer [1, ...] buffers."""
    layers = range(self.v_lbksh.shape[0])
    return self.replace(k_lbkhs=tuple(self.k_lbkhs[l:l + 1] for l in layers),
                        v_lbksh=tuple(self.v_lbksh[l:l + 1] for l in layers))
