"""The step's scoring and update passes on packed rows (`actor.use_dynamic_bsz`).

Each mini-batch's sequences (real prompt + real response tokens) are packed by `rl.packing` into
rows of `actor.ppo_max_token_len_per_device` tokens, each data-parallel device packing its own
sequences: the batch [B, ...] is viewed as [n_mini, devices, s, ...] (`split_shards`), a local
reshape of the contiguous per-device blocks. A micro-batch is one row per device, [devices, L];
micro-batch r runs only when some device's row r holds tokens (`lax.cond`), so the work follows
the real tokens with one compile. Per-token outputs are gathered back to [B, R] and the losses
are today's [b, R] functions with the mini-batch's global denominators: packing is a layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from grlo_jax import sharding
from grlo_jax.rl import chunked_head, packing


def split_shards(x: jax.Array, n_mini: int, d: int) -> jax.Array:
  """[B, ...] -> [n_mini, d, s, ...]: mini-batch g holds the rows with index % n_mini == g (as
  `rl.step`'s padded split), each of the d devices its own s = B / (n_mini d) of them."""
  b = x.shape[0]
  s = b // (n_mini * d)
  y = jnp.moveaxis(x.reshape(d, s, n_mini, *x.shape[1:]), 2, 0)
  return sharding.constrain(y, (None, "batch") + (None,) * (y.ndim - 2))


def merge_shards(y: jax.Array) -> jax.Array:
  """Inverse of `split_shards`."""
  return jnp.moveaxis(y, 0, 2).reshape(-1, *y.shape[3:])


HEAD_CHUNK = 128  # packed positions a chunk of the LM head computes (`policy_outputs`)


@struct.dataclass
class Rows:
  """Packed rows of n_mini x d shards: ids, segment ids, positions [n_mini, d, s, L], where the
  LM head is needed (`head`, 1 at each position that predicts a response token) and the layouts
  ([n_mini, d, s] arrays)."""

  ids: jax.Array
  seg: jax.Array
  pos: jax.Array
  head: jax.Array
  layout: packing.Layout

  @property
  def used_g(self) -> jax.Array:
    """[n_mini] rows that the busiest device of each mini-batch uses: the micro-batches run."""
    return self.layout.used.max(axis=1)


def pack_rows(ids_bt: jax.Array, mask_bt: jax.Array, n_mini: int, d: int, row_len: int,
              head_bt: jax.Array | None = None) -> Rows:
  """Packs each (mini-batch, device) shard's masked tokens into s rows of `row_len`; `head_bt`
  flags the tokens whose LM-head output is needed (default none)."""
  ids, mask = split_shards(ids_bt, n_mini, d), split_shards(mask_bt, n_mini, d)
  head = split_shards(jnp.zeros_like(mask_bt) if head_bt is None else head_bt, n_mini, d)
  s = ids.shape[2]

  def one(ids_nt, mask_nt, head_nt):
    layout = packing.plan_rows(mask_nt.astype(jnp.int32).sum(-1), row_len, s)
    return (*packing.pack(ids_nt, mask_nt, layout), packing.scatter_tokens(head_nt, mask_nt, layout), layout)

  ids_rl, seg_rl, pos_rl, head_rl, layout = jax.vmap(jax.vmap(one))(ids, mask, head)
  c = lambda x: sharding.constrain(x, (None, "batch", None, None))
  return Rows(ids=c(ids_rl), seg=c(seg_rl), pos=c(pos_rl), head=c(head_rl), layout=layout)


def response_head_mask(prompt_mask_bp: jax.Array, response_mask_br: jax.Array) -> jax.Array:
  """[B, P + R] over prompt + response columns: 1 at the positions that predict a response token
  (the prompt's last column, which left padding keeps real, and every response token but the last)."""
  b, p = prompt_mask_bp.shape
  m = response_mask_br.astype(jnp.int32)
  return jnp.concatenate([jnp.zeros((b, p - 1), jnp.int32), jnp.ones((b, 1), jnp.int32), m[:, 1:],
                          jnp.zeros((b, 1), jnp.int32)], axis=1)


def executed_rows(rows: Rows) -> jax.Array:
  """Rows the passes compute over all devices (float32): micro-batches run x devices."""
  return rows.used_g.sum().astype(jnp.float32) * rows.ids.shape[1]


def executed_head_positions(rows: Rows) -> jax.Array:
  """Positions the policy's LM head computes over all devices (float32): in each micro-batch,
  HEAD_CHUNK-sized chunks up to the busiest device's count of flagged positions."""
  c = min(HEAD_CHUNK, rows.ids.shape[-1])
  count_gs = rows.head.sum(-1).max(axis=1)  # [n_mini, s]
  return (-(-count_gs // c)).sum().astype(jnp.float32) * c * rows.ids.shape[1]


def map_rows(fn, rows: Rows, out_dtype=jnp.float32) -> jax.Array:
  """`fn(ids_dl, seg_dl, pos_dl, head_dl) -> [d, L]` over every micro-batch that holds tokens
  (zeros for the others) -> [n_mini, d, s, L]."""
  n_mini, d, s, l = rows.ids.shape
  to_micro = lambda x: jnp.moveaxis(x, 2, 1).reshape(n_mini * s, d, l)
  live_m = (jnp.arange(s)[None] < rows.used_g[:, None]).reshape(-1)

  def one(args):
    live, xs = args
    xs = tuple(sharding.constrain(x, ("batch", None)) for x in xs)
    return jax.lax.cond(live, lambda: fn(*xs).astype(out_dtype), lambda: jnp.zeros((d, l), out_dtype))

  out = jax.lax.map(one, (live_m, tuple(to_micro(x) for x in (rows.ids, rows.seg, rows.pos, rows.head))))
  return jnp.moveaxis(out.reshape(n_mini, s, d, l), 1, 2)


def gather_sequences(x_gdsl: jax.Array, rows: Rows, offset_gdsk: jax.Array) -> jax.Array:
  """Per-token outputs [n_mini, d, s, L] at in-sequence offsets [n_mini, d, s, k] -> [B, k]."""
  out = jax.vmap(jax.vmap(packing.gather))(x_gdsl, rows.layout, offset_gdsk)
  return merge_shards(out)


def response_offsets(prompt_mask_bp: jax.Array, r: int, n_mini: int, d: int) -> jax.Array:
  """[n_mini, d, s, R]: in-sequence index of the position that predicts response token j (the
  sequence is the real prompt then the response): prompt length - 1 + j."""
  lp_b = prompt_mask_bp.astype(jnp.int32).sum(-1)
  return split_shards(lp_b[:, None] - 1 + jnp.arange(r, dtype=jnp.int32)[None], n_mini, d)


def row_of(x_dl: jax.Array, layout: packing.Layout, r: jax.Array, offset_dsk: jax.Array):
  """Micro-batch r's per-token outputs [d, L] at offsets [d, s, k] of each device's s sequences
  -> ([d * s, k] values, [d * s, 1] bool: the sequence lies in row r)."""
  l = x_dl.shape[1]
  idx_dsk = jnp.clip(layout.start_n[..., None] + offset_dsk, 0, l - 1)
  vals = jax.vmap(lambda x_l, i_sk: x_l[i_sk])(x_dl, idx_dsk)
  d, s, k = offset_dsk.shape
  return vals.reshape(d * s, k), (layout.row_n == r).reshape(d * s, 1)


def policy_outputs(graphdef: nnx.GraphDef, params, ids_dl, seg_dl, pos_dl, head_dl, temperature: float,
                   entropy: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """Log-prob of the next token (and the entropy) [d, L] float32 at the positions `head_dl` flags
  (0 elsewhere), from logits / temperature.

  The LM head runs on those positions only, HEAD_CHUNK at a time (`rl.chunked_head`): each row's
  flagged positions are gathered to its front and chunks past the busiest row's count are
  skipped, so the prompt tokens and the padding cost no head FLOPs (the head is most of a small
  model's)."""
  model = nnx.merge(graphdef, params)
  x_dld, _ = model.hidden(ids_dl, segment_ids_bt=seg_dl, positions_bt=pos_dl)
  labels_dl = packing.next_ids(ids_dl)
  d, l, _ = x_dld.shape
  c = min(HEAD_CHUNK, l)
  nc = -(-l // c)
  need_dl = head_dl.astype(bool)
  order_dl = jnp.argsort(~need_dl, axis=1, stable=True).astype(jnp.int32)  # flagged first, in order
  order_dl = jnp.pad(order_dl, ((0, 0), (0, nc * c - l)), constant_values=l)  # l: past the row
  safe_dk = jnp.minimum(order_dl, l - 1)
  w, w_layout = model.lm_head_weight()
  logp_dk, ent_dk = chunked_head.logprobs(
      jnp.take_along_axis(x_dld, safe_dk[..., None], axis=1), w.astype(x_dld.dtype),
      jnp.take_along_axis(labels_dl, safe_dk, axis=1), need_dl.sum(-1).max(), chunk=c,
      temperature=temperature if temperature > 0 else 1.0, w_layout=w_layout, entropy=entropy)
  rows_dk = jnp.broadcast_to(jnp.arange(d)[:, None], (d, nc * c))
  back = lambda y_dk: jnp.zeros((d, l), jnp.float32).at[rows_dk, order_dl].set(y_dk, mode="drop")
  return back(logp_dk), back(ent_dk) if entropy else None


def values(graphdef: nnx.GraphDef, params, ids_dl, seg_dl, pos_dl) -> jax.Array:
  """[d, L] critic values of every packed position."""
  model = nnx.merge(graphdef, params)
  return model(ids_dl, segment_ids_bt=seg_dl, positions_bt=pos_dl)


def rm_scores(rm_model, ids_bt: jax.Array, mask_bt: jax.Array, row_len: int) -> tuple[jax.Array, jax.Array]:
  """The reward model's score [B] (float32) of each masked sequence, read at its last token, on
  rows of `row_len` packed per device; and the rows computed (float32)."""
  if rm_model.cfg.head != "score":
    raise ValueError(f"expected a reward model with a score head, got head={rm_model.cfg.head!r}")
  d = sharding.data_shards(ids_bt.shape[0])
  rows = pack_rows(ids_bt, mask_bt, 1, d, row_len)
  graphdef, params = nnx.split(rm_model)

  def score_row(ids_dl, seg_dl, pos_dl, head_dl):
    del head_dl
    model = nnx.merge(graphdef, params)
    x_dld, _ = model.hidden(ids_dl, segment_ids_bt=seg_dl, positions_bt=pos_dl)
    dd, l, dm = x_dld.shape
    return model.head(x_dld.reshape(dd * l, 1, dm))[:, 0].reshape(dd, l)  # the head at every token

  score_gdsl = map_rows(score_row, rows)
  last_gds1 = (rows.layout.length_n - 1)[..., None]
  return gather_sequences(score_gdsl, rows, last_gds1)[:, 0], executed_rows(rows)
