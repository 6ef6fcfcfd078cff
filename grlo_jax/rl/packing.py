"""Sequence packing inside the jitted step: the real tokens of many sequences in rows of L tokens.

  layout = plan_rows(length_n, row_len, num_rows)                  # first-fit decreasing
  ids_rl, seg_rl, pos_rl = pack(ids_nt, mask_nt, layout)           # [num_rows, L]
  out_rl = model(ids_rl, segment_ids_bt=seg_rl, positions_bt=pos_rl)
  out_nk = gather(out_rl, layout, offset_nk)                       # back to one row a sequence

A sequence is a row of `ids_nt` restricted to its `mask_nt` (holes allowed: a left-padded prompt
followed by a right-padded response); its tokens keep their order and are laid out back to back
from `layout.start_n` in row `layout.row_n`. Segment ids are the sequence's index + 1 (0 =
padding), positions restart at 0 in each sequence. Every shape is static: `num_rows` is a worst
case (one row a sequence always fits, as every sequence is at most L long), and the rows a
layout uses are a prefix `0 .. used - 1` of them, so a loop over rows can stop at `layout.used`.

These functions see one shard's sequences; the step vmaps them over the data-parallel devices so
that each device packs its own rows (no cross-device shuffle).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Layout:
  """Where each of n sequences lies: row `row_n` (num_rows when empty), tokens from `start_n`."""

  row_n: jax.Array  # int32 [n]
  start_n: jax.Array  # int32 [n]
  length_n: jax.Array  # int32 [n]
  used: jax.Array  # int32 scalar: rows 0 .. used - 1 hold tokens
  num_rows: int = struct.field(pytree_node=False)
  row_len: int = struct.field(pytree_node=False)


def plan_rows(length_n: jax.Array, row_len: int, num_rows: int) -> Layout:
  """First-fit decreasing: longest sequence first, each into the first row with room.

  Lengths must be at most `row_len` (the caller checks the static worst case); with
  `num_rows >= n` every sequence finds a row. Empty sequences get no row.
  """
  length_n = length_n.astype(jnp.int32)
  order_n = jnp.argsort(-length_n, stable=True)

  def place(fill_r, length):
    row = jnp.argmax(fill_r + length <= row_len).astype(jnp.int32)
    start = fill_r[row]
    row = jnp.where(length > 0, row, num_rows)
    fill_r = fill_r.at[row].add(length, mode="drop")
    return fill_r, (row, start)

  fill_r, (row_s, start_s) = jax.lax.scan(place, jnp.zeros((num_rows,), jnp.int32), length_n[order_n])
  row_n = jnp.zeros_like(row_s).at[order_n].set(row_s)
  start_n = jnp.zeros_like(start_s).at[order_n].set(start_s)
  used = jnp.sum(fill_r > 0, dtype=jnp.int32)
  return Layout(row_n=row_n, start_n=start_n, length_n=length_n, used=used, num_rows=num_rows,
                row_len=row_len)


def compact_index(mask_nt: jax.Array) -> jax.Array:
  """[n, t] int32: each real token's index in its own sequence (cumulative count - 1)."""
  return jnp.cumsum(mask_nt.astype(jnp.int32), axis=1) - 1


def flat_index(layout: Layout, offset_nk: jax.Array) -> jax.Array:
  """[n, k] int32 index into the flattened [num_rows * L] rows of token `offset_nk` of each
  sequence (offsets are in-sequence indices)."""
  return layout.row_n[:, None] * layout.row_len + layout.start_n[:, None] + offset_nk


def scatter_tokens(values_nt: jax.Array, mask_nt: jax.Array, layout: Layout) -> jax.Array:
  """[num_rows, L] int32: each masked token's value at its packed slot, 0 elsewhere."""
  size = layout.num_rows * layout.row_len
  mask_nt = mask_nt.astype(bool)
  dest_nt = jnp.where(mask_nt, flat_index(layout, compact_index(mask_nt)), size)  # size: dropped
  flat = jnp.zeros((size,), jnp.int32).at[dest_nt.reshape(-1)].set(
      values_nt.reshape(-1).astype(jnp.int32), mode="drop")
  return flat.reshape(layout.num_rows, layout.row_len)


def pack(ids_nt: jax.Array, mask_nt: jax.Array, layout: Layout) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(ids_rl, segment_ids_rl, positions_rl) [num_rows, L] int32 of the masked tokens."""
  n, _ = ids_nt.shape
  seg_nt = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.int32)[:, None], ids_nt.shape)
  return (scatter_tokens(ids_nt, mask_nt, layout), scatter_tokens(seg_nt, mask_nt, layout),
          scatter_tokens(compact_index(mask_nt), mask_nt, layout))


def gather(x_rl: jax.Array, layout: Layout, offset_nk: jax.Array) -> jax.Array:
  """x_rl [num_rows, L, ...] at token `offset_nk` of each sequence -> [n, k, ...]; offsets out
  of a sequence's range read some other slot (mask them)."""
  size = layout.num_rows * layout.row_len
  idx_nk = jnp.clip(flat_index(layout, offset_nk), 0, size - 1)
  return x_rl.reshape(size, *x_rl.shape[2:])[idx_nk]


def next_ids(ids_rl: jax.Array) -> jax.Array:
  """[num_rows, L]: the token after each position in its row (the last position gets 0). Where a
  sequence ends this is the next sequence's first token: only positions inside a sequence are
  read as labels."""
  return jnp.concatenate([ids_rl[:, 1:], jnp.zeros_like(ids_rl[:, :1])], axis=1)
