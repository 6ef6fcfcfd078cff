"""Flash-style causal GQA attention over segment ids in plain JAX (`model.attention=chunked`).

The rows are cut into query blocks and key blocks. For each query block a `fori_loop` runs an
online softmax over the key blocks that any of its queries may attend, and only those: a
[num_q_blocks, num_k_blocks] table, computed from each block's range of segment ids and the
causal edge, lists them, so blocks past the diagonal or wholly in other segments cost nothing
(the loop's trip count is dynamic; one compile serves every packing).

The backward is a custom VJP, FlashAttention-2's: it keeps only q, k, v, the output and the
per-query log-sum-exp, and recomputes each visited block's probabilities. Letting JAX
differentiate the forward loop would save every block's probabilities, [T, S] per head again;
`jax.checkpoint` around it would recompute the whole forward. One key-major pass accumulates
dK and dV per key block and adds dQ into a [T, H] buffer, so memory is O(T x block) per head in
the forward and the backward alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 512
_NEG_INF = -1e30
_BIG = 2**30


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def attend(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, q_seg_bt: jax.Array,
           kv_seg_bs: jax.Array, q_offset: jax.Array | int = 0, *, block: int | None = None) -> jax.Array:
  """`attention.attend`'s contract: [B, T, N, H] outputs, 0 where a query may attend nothing."""
  b, t, n, h = q_btnh.shape
  s, kh = k_bskh.shape[1], k_bskh.shape[2]
  block = block or DEFAULT_BLOCK
  bq, bk = min(block, _round_up(t, 8)), min(block, _round_up(s, 8))
  tp, sp = _round_up(t, bq), _round_up(s, bk)
  nq, nk = tp // bq, sp // bk
  off_b = jnp.broadcast_to(jnp.asarray(q_offset, jnp.int32).reshape(-1), (b,))
  q_seg_bt = jnp.pad(q_seg_bt.astype(jnp.int32), ((0, 0), (0, tp - t)))
  kv_seg_bs = jnp.pad(kv_seg_bs.astype(jnp.int32), ((0, 0), (0, sp - s)))
  # Blocked layouts: q [nq, B, K, G, bq, H], k / v [nk, B, bk, K, H], segment ids [n*, B, b*].
  q_qbkgih = jnp.pad(q_btnh, ((0, 0), (0, tp - t), (0, 0), (0, 0))).reshape(b, nq, bq, kh, n // kh, h)
  q_qbkgih = q_qbkgih.transpose(1, 0, 3, 4, 2, 5)
  pad_kv = ((0, 0), (0, sp - s), (0, 0), (0, 0))
  k_jbskh = jnp.pad(k_bskh, pad_kv).reshape(b, nk, bk, kh, h).transpose(1, 0, 2, 3, 4)
  v_jbskh = jnp.pad(v_bskh, pad_kv).reshape(b, nk, bk, kh, h).transpose(1, 0, 2, 3, 4)
  qseg_qbi = q_seg_bt.reshape(b, nq, bq).transpose(1, 0, 2)
  kseg_jbs = kv_seg_bs.reshape(b, nk, bk).transpose(1, 0, 2)
  live_qj = live_blocks(qseg_qbi, kseg_jbs, off_b)
  o_qbkgih = _flash(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj)
  o_btnh = o_qbkgih.transpose(1, 0, 4, 2, 3, 5).reshape(b, tp, n, h)
  return o_btnh[:, :t]


def live_blocks(qseg_qbi: jax.Array, kseg_jbs: jax.Array, off_b: jax.Array) -> jax.Array:
  """[nq, nk] bool: some query of block i in some row may attend some key of block j (a
  superset of the true pattern: segment ranges overlap and the block is not past the diagonal)."""
  nq, _, bq = qseg_qbi.shape
  nk, _, bk = kseg_jbs.shape
  lo = lambda seg: jnp.min(jnp.where(seg != 0, seg, _BIG), axis=-1)
  hi = lambda seg: jnp.max(jnp.where(seg != 0, seg, -1), axis=-1)
  q_lo, q_hi = lo(qseg_qbi)[:, None], hi(qseg_qbi)[:, None]  # [nq, 1, B]
  k_lo, k_hi = lo(kseg_jbs)[None], hi(kseg_jbs)[None]  # [1, nk, B]
  overlap = (q_lo <= k_hi) & (k_lo <= q_hi)
  last_q_qb = (jnp.arange(nq) * bq + bq - 1)[:, None, None] + off_b[None, None]
  causal = (jnp.arange(nk) * bk)[None, :, None] <= last_q_qb
  return jnp.any(overlap & causal, axis=-1)


def _visit_order(live_xy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per row x of the table: the live y's first (ascending), and how many there are."""
  order_xy = jnp.argsort(~live_xy, axis=1, stable=True).astype(jnp.int32)
  return order_xy, live_xy.sum(axis=1, dtype=jnp.int32)


def _allowed(qseg_bi, kseg_bs, off_b, i, j, bq: int, bk: int) -> jax.Array:
  """[B, 1, 1, bq, bk]: query (block i) may attend key (block j)."""
  q_slot_bi = i * bq + jnp.arange(bq)[None] + off_b[:, None]
  k_slot_s = j * bk + jnp.arange(bk)
  ok_bis = (qseg_bi[:, :, None] == kseg_bs[:, None, :]) & (kseg_bs != 0)[:, None, :]
  ok_bis &= k_slot_s[None, None, :] <= q_slot_bi[:, :, None]
  return ok_bis[:, None, None]


def _scores(q_bkgih, k_bskh):
  scale = q_bkgih.shape[-1] ** -0.5
  return jnp.einsum("bkgih,bskh->bkgis", q_bkgih, k_bskh, preferred_element_type=jnp.float32) * scale


def _forward(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj):
  _, bq = qseg_qbi.shape[1:]
  bk = kseg_jbs.shape[2]
  order_qj, count_q = _visit_order(live_qj)

  def one_q_block(args):
    i, q_bkgih, qseg_bi = args
    stats = q_bkgih.shape[:-1]  # [B, K, G, bq]

    def visit(c, carry):
      m, l, acc = carry
      j = order_qj[i, c]
      k_bskh, v_bskh, kseg_bs = k_jbskh[j], v_jbskh[j], kseg_jbs[j]
      ok = _allowed(qseg_bi, kseg_bs, off_b, i, j, bq, bk)
      s = jnp.where(ok, _scores(q_bkgih, k_bskh), _NEG_INF)
      m_new = jnp.maximum(m, s.max(axis=-1))
      p = jnp.where(ok, jnp.exp(s - m_new[..., None]), 0.0)
      alpha = jnp.exp(m - m_new)
      acc = acc * alpha[..., None] + jnp.einsum("bkgis,bskh->bkgih", p.astype(v_bskh.dtype), v_bskh,
                                                preferred_element_type=jnp.float32)
      return m_new, l * alpha + p.sum(axis=-1), acc

    init = (jnp.full(stats, _NEG_INF, jnp.float32), jnp.zeros(stats, jnp.float32),
            jnp.zeros(q_bkgih.shape, jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, count_q[i], visit, init)
    seen = l > 0
    o = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
    return o.astype(q_bkgih.dtype), lse

  nq = q_qbkgih.shape[0]
  return jax.lax.map(one_q_block, (jnp.arange(nq), q_qbkgih, qseg_qbi))


@jax.custom_vjp
def _flash(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj):
  return _forward(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj)[0]


def _flash_fwd(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj):
  o, lse = _forward(q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj)
  return o, (q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj, o, lse)


def _flash_bwd(res, do_qbkgih):
  q_qbkgih, k_jbskh, v_jbskh, qseg_qbi, kseg_jbs, off_b, live_qj, o_qbkgih, lse_qbkgi = res
  bq, bk = qseg_qbi.shape[2], kseg_jbs.shape[2]
  scale = q_qbkgih.shape[-1] ** -0.5
  f32 = jnp.float32
  dt = q_qbkgih.dtype
  # D_i = rowsum(dO * O): the softmax backward's per-query term.
  delta_qbkgi = jnp.sum(do_qbkgih.astype(f32) * o_qbkgih.astype(f32), axis=-1)
  order_jq, count_j = _visit_order(live_qj.T)

  def one_k_block(dq, args):
    j, k_bskh, v_bskh, kseg_bs = args

    def visit(c, carry):
      dk, dv, dq = carry
      i = order_jq[j, c]
      q_bkgih, do_bkgih = q_qbkgih[i], do_qbkgih[i]
      ok = _allowed(qseg_qbi[i], kseg_bs, off_b, i, j, bq, bk)
      p = jnp.where(ok, jnp.exp(_scores(q_bkgih, k_bskh) - lse_qbkgi[i][..., None]), 0.0)
      dv += jnp.einsum("bkgis,bkgih->bskh", p.astype(dt), do_bkgih, preferred_element_type=f32)
      dp = jnp.einsum("bkgih,bskh->bkgis", do_bkgih, v_bskh, preferred_element_type=f32)
      ds = (p * (dp - delta_qbkgi[i][..., None]) * scale).astype(dt)
      dk += jnp.einsum("bkgis,bkgih->bskh", ds, q_bkgih, preferred_element_type=f32)
      dq = dq.at[i].add(jnp.einsum("bkgis,bskh->bkgih", ds, k_bskh, preferred_element_type=f32))
      return dk, dv, dq

    zeros = jnp.zeros(k_bskh.shape, f32)
    dk, dv, dq = jax.lax.fori_loop(0, count_j[j], visit, (zeros, zeros, dq))
    return dq, (dk.astype(k_bskh.dtype), dv.astype(v_bskh.dtype))

  nk = k_jbskh.shape[0]
  dq, (dk, dv) = jax.lax.scan(one_k_block, jnp.zeros(q_qbkgih.shape, f32),
                              (jnp.arange(nk), k_jbskh, v_jbskh, kseg_jbs))
  return dq.astype(dt), dk, dv, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
