"""`rl.chunked_head.logprobs` against the plain head + `losses` functions, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax.rl import chunked_head, losses


def _reference(x_dnd, w, labels_dn, live_n, temperature, w_layout):
  spec = "dnk,kv->dnv" if w_layout == "dv" else "dnk,vk->dnv"
  z = jnp.einsum(spec, x_dnd, w, preferred_element_type=jnp.float32) / temperature
  keep = live_n[None].astype(jnp.float32)
  return losses.logprobs_from_logits(z, labels_dn) * keep, losses.entropy_from_logits(z) * keep


@pytest.mark.parametrize("w_layout,count,temperature", [("dv", 11, 1.0), ("vd", 16, 0.7), ("dv", 0, 1.0)])
def test_chunked_head_matches_the_plain_head(w_layout, count, temperature):
  d, n, dm, v, chunk = 2, 24, 16, 300, 8
  kx, kw, kl, kg = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (d, n, dm))
  w = jax.random.normal(kw, (dm, v) if w_layout == "dv" else (v, dm))
  labels = jax.random.randint(kl, (d, n), 0, v)
  g_lp, g_ent = jax.random.normal(kg, (2, d, n))
  live = jnp.arange(n) < -(-count // chunk) * chunk  # every position of a chunk that holds one of the first `count`

  def ours(x, w):
    lp, ent = chunked_head.logprobs(x, w, labels, count, chunk=chunk, temperature=temperature,
                                    w_layout=w_layout, entropy=True)
    return lp, ent

  def loss(fn, x, w):
    lp, ent = fn(x, w)
    return (g_lp * lp).sum() + (g_ent * ent).sum()

  ref = lambda x, w: _reference(x, w, labels, live, temperature, w_layout)
  for a, b in zip(jax.jit(ours)(x, w), ref(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  got = jax.jit(jax.grad(lambda x, w: loss(ours, x, w), argnums=(0, 1)))(x, w)
  want = jax.grad(lambda x, w: loss(ref, x, w), argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if count == 0:
    assert not np.any(np.asarray(got[1]))


def test_chunked_head_without_entropy_returns_none_and_skips_its_gradient():
  x = jax.random.normal(jax.random.key(1), (1, 8, 4))
  w = jax.random.normal(jax.random.key(2), (4, 10))
  labels = jnp.zeros((1, 8), jnp.int32)
  lp, ent = chunked_head.logprobs(x, w, labels, 8, chunk=4)
  assert ent is None
  ref, _ = _reference(x, w, labels, jnp.ones(8, bool), 1.0, "dv")
  np.testing.assert_allclose(lp, ref, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of chunk"):
    chunked_head.logprobs(x, w, labels, 8, chunk=3)


@pytest.mark.parametrize("w_layout", ["dv", "vd"])
def test_chunked_head_on_a_mesh_keeps_the_head_gradient_sharded(w_layout):
  from grlo_jax import sharding

  d, n, dm, v, chunk = 4, 16, 8, 64, 8
  x = jax.random.normal(jax.random.key(3), (d, n, dm))
  w = jax.random.normal(jax.random.key(4), (dm, v) if w_layout == "dv" else (v, dm))
  labels = jax.random.randint(jax.random.key(5), (d, n), 0, v)
  names = ("embed", "vocab") if w_layout == "dv" else ("vocab", "embed")

  def loss(x, w):
    lp, ent = chunked_head.logprobs(x, w, labels, 12, chunk=chunk, w_layout=w_layout, entropy=True)
    return lp.sum() + 0.1 * ent.sum()

  want = jax.grad(loss, argnums=(0, 1))(x, w)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  x_s = jax.device_put(x, sharding.batch_sharding(mesh, x.shape))
  w_s = jax.device_put(w, sharding.named(mesh, names, w.shape))
  with jax.set_mesh(mesh):
    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(x_s, w_s)
  assert got[1].sharding.spec == w_s.sharding.spec
  assert got[1].addressable_shards[0].data.size == w.size // 8  # split over fsdp x tensor, not replicated
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
