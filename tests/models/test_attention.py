"""Every attention implementation against the dense reference: packed rows, padding, GQA, offsets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax import models
from grlo_jax.models import attention, chunked_attention

B, T, N, K, H = 4, 37, 4, 2, 8  # T is a multiple of no block size used here


def _segments() -> np.ndarray:
  seg = np.zeros((B, T), np.int32)
  seg[0, :10], seg[0, 10:13], seg[0, 13:30] = 1, 2, 3  # three uneven segments, right padding
  seg[1, 5:] = 1  # a left-padded prompt
  seg[2, :] = 0  # all padding
  seg[3, :1], seg[3, 1:20], seg[3, 20:] = 1, 2, 3  # a one-token segment; no padding
  return seg


def _inputs(seed=0, s=T, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  return f(B, T, N, H), f(B, s, K, H), f(B, s, K, H), f(B, T, N, H)


def _value_and_grads(impl, q, k, v, w, seg_q, seg_kv=None, q_offset=0, block=None):
  real = (seg_q != 0)[..., None, None]

  def loss(q, k, v):
    o = attention.attend(q, k, v, seg_q, seg_kv, q_offset=q_offset, impl=impl, block=block)
    return jnp.sum(jnp.where(real, o * w, 0.0)), o

  (_, o), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  return o, grads


def _assert_close(got, want, rtol):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  err = np.abs(got - want).max()
  assert err <= rtol * np.abs(want).max(), f"max abs error {err}, scale {np.abs(want).max()}"


IMPLS = [("chunked", 8), ("chunked", 16), ("chunked", None), ("splash", None), ("pallas_gpu", None)]


@pytest.mark.parametrize("impl, block", IMPLS, ids=[f"{i}-{b}" for i, b in IMPLS])
def test_matches_the_dense_reference_forward_and_gradient(impl, block):
  q, k, v, w = _inputs()
  seg = jnp.asarray(_segments())
  o_ref, g_ref = _value_and_grads("xla", q, k, v, w, seg)
  o, g = _value_and_grads(impl, q, k, v, w, seg, block=block)
  real = np.asarray(seg) != 0
  _assert_close(np.asarray(o)[real], np.asarray(o_ref)[real], 1e-5)
  for got, want in zip(g, g_ref):
    _assert_close(got, want, 1e-5)
  # The all-padding row: zeros out, zero gradients, nothing non-finite anywhere.
  assert np.all(np.asarray(o)[2] == 0)
  for x in (o, *g):
    assert np.isfinite(np.asarray(x)).all()
  for x in g:
    assert np.all(np.asarray(x)[2] == 0)


def test_packed_segments_do_not_see_each_other():
  q, k, v, w = _inputs(1)
  seg = jnp.asarray(_segments())
  o = attention.attend(q, k, v, seg, impl="chunked", block=8)
  # Segment 2 of row 0 (tokens 10..12) attended alone equals the packed result.
  alone = attention.attend(q[:1, 10:13], k[:1, 10:13], v[:1, 10:13], jnp.ones((1, 3), jnp.int32), impl="xla")
  _assert_close(o[0, 10:13], alone[0], 1e-6)


@pytest.mark.parametrize("block", [8, None])
def test_prefill_into_a_cache_with_per_row_offsets(block):
  s = 53  # cache slots; the T new queries start at slot q_offset of each row
  q, k, v, w = _inputs(2, s=s)
  rng = np.random.default_rng(3)
  seg_kv = jnp.asarray((rng.random((B, s)) < 0.8).astype(np.int32))  # filled cache slots
  seg_q = jnp.ones((B, T), jnp.int32).at[1, :4].set(0)
  offset = jnp.asarray([0, 5, 16, 9], jnp.int32)
  o_ref, g_ref = _value_and_grads("xla", q, k, v, w, seg_q, seg_kv, offset)
  o, g = _value_and_grads("chunked", q, k, v, w, seg_q, seg_kv, offset, block=block)
  real = np.asarray(seg_q) != 0
  _assert_close(np.asarray(o)[real], np.asarray(o_ref)[real], 1e-5)
  for got, want in zip(g, g_ref):
    _assert_close(got, want, 1e-5)


def test_chunked_visits_a_superset_of_the_needed_blocks_and_skips_the_rest():
  seg = np.zeros((2, 64), np.int32)
  seg[0, :20], seg[0, 20:40], seg[0, 40:64] = 1, 2, 3
  seg[1, 30:] = 1
  bq = bk = 8
  qseg = jnp.asarray(seg.reshape(2, 8, bq).transpose(1, 0, 2))
  live = np.asarray(chunked_attention.live_blocks(qseg, qseg, jnp.zeros((2,), jnp.int32)))
  allowed = np.asarray(attention.allowed_mask(jnp.asarray(seg), jnp.asarray(seg)))  # [B, T, S]
  needed = allowed.reshape(2, 8, bq, 8, bk).any(axis=(0, 2, 4))
  assert np.all(live >= needed)  # nothing needed is skipped
  assert not live[np.triu_indices(8, 1)].any()  # blocks past the diagonal never run
  assert live.sum() < np.tril(np.ones((8, 8))).sum()  # and whole other-segment blocks neither


def test_bfloat16_chunked_stays_close_to_dense():
  q, k, v, w = _inputs(4, dtype=jnp.bfloat16)
  seg = jnp.asarray(_segments())
  o_ref = attention.attend_jit(q, k, v, seg, impl="xla")
  o = attention.attend_jit(q, k, v, seg, impl="chunked", block=16)
  real = np.asarray(seg) != 0
  _assert_close(np.asarray(o, np.float32)[real], np.asarray(o_ref, np.float32)[real], 2e-2)


def test_auto_picks_per_backend_and_length():
  assert attention.resolve("auto", 4096, 4096, "tpu") == "splash"
  assert attention.resolve("auto", 4096, 4096, "gpu") == "pallas_gpu"
  assert attention.resolve("auto", attention.AUTO_DENSE_MAX, attention.AUTO_DENSE_MAX, "cpu") == "xla"
  assert attention.resolve("auto", 4096, 4096, "cpu") == "chunked"
  assert attention.resolve("xla", 4096, 4096, "tpu") == "xla"
  with pytest.raises(ValueError, match="model.attention='flash'"):
    attention.resolve("flash", 8, 8)
  with pytest.raises(ValueError, match="attention must be one of"):
    models.preset("nano", attention="flash")


def test_a_packed_row_equals_its_sequences_run_alone():
  model = models.init_model(models.preset("nano", attention="chunked"), seed=0)
  rng = np.random.default_rng(5)
  lens = [7, 12, 3]
  seqs = [rng.integers(0, 512, n) for n in lens]
  row = np.concatenate(seqs + [np.zeros(4, np.int64)])[None]
  seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lens)] + [np.zeros(4, np.int64)])[None]
  packed = np.asarray(model(jnp.asarray(row), segment_ids_bt=jnp.asarray(seg)))
  start = 0
  for ids in seqs:
    alone = np.asarray(model(jnp.asarray(ids[None])))
    _assert_close(packed[0, start:start + len(ids)], alone[0], 1e-5)
    start += len(ids)
