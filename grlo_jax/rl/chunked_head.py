"""The LM head's next-token log-probs (and entropies), a chunk of positions at a time, with its own
backward.

  logp_dn, ent_dn = chunked_head.logprobs(x_dnd, w, labels_dn, count, chunk=128, temperature=1.0,
                                          w_layout="dv", entropy=True)

Only the first `count` positions of each row are computed (the caller gathers the positions it
needs to the front): chunks past `count` cost nothing, forward or backward, with one compile.
Autodiff of such a loop (`lax.cond` per chunk under `jax.checkpoint`) keeps every chunk's inputs,
the [D, V] head weight among them, as stacked residuals and zero-fills them for skipped chunks:
hundreds of MB copied per call for a 32k vocabulary. This VJP saves only its inputs, recomputes
each used chunk's logits in the backward, and accumulates the head's gradient in one buffer, so
memory is O(chunk x V) and the work is the FLOPs of the used chunks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from grlo_jax import sharding
from grlo_jax.models.transformer import lm_logits


def logprobs(x_dnd: jax.Array, w: jax.Array, labels_dn: jax.Array, count: jax.Array, *, chunk: int,
             temperature: float = 1.0, w_layout: str = "dv",
             entropy: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """log softmax(x w / T)[label] (and the entropy of that softmax) [d, n] float32 at the first
  `count` positions of each row, 0 past the last chunk that holds them.

  `w` is the head matrix [D, V] (`w_layout="dv"`) or the tied embedding [V, D] ("vd"), in the
  compute dtype of `x`; n must be a multiple of `chunk`."""
  if x_dnd.shape[1] % chunk:
    raise ValueError(f"positions {x_dnd.shape[1]} must be a multiple of chunk={chunk}")
  if w_layout not in ("dv", "vd"):
    raise ValueError(f"w_layout must be 'dv' or 'vd', got {w_layout!r}")
  logp, ent = _logprobs(x_dnd, w, labels_dn.astype(jnp.int32), jnp.asarray(count, jnp.int32),
                        chunk, float(temperature), w_layout, entropy)
  return logp, ent if entropy else None


def _logits(x_kd, w, temperature: float, w_layout: str) -> jax.Array:
  return lm_logits(x_kd, w, w_layout) / temperature


def _chunk(x_dnd, labels_dn, i, chunk: int):
  """Chunk i's inputs, rows flattened: x [d * c, D], labels [d * c]."""
  d, _, dm = x_dnd.shape
  x_dcd = jax.lax.dynamic_slice_in_dim(x_dnd, i * chunk, chunk, axis=1)
  lab_dc = jax.lax.dynamic_slice_in_dim(labels_dn, i * chunk, chunk, axis=1)
  return x_dcd.reshape(d * chunk, dm), lab_dc.reshape(d * chunk)


def _stats(z_kv, lab_k):
  """(log-softmax [k, V], logp of the label [k], entropy [k]) of float32 logits; 2-D on purpose:
  XLA:CPU runs a [1, c, V] broadcast-multiply-reduce ~10x slower than the same [c, V] one."""
  lse_k = jax.nn.logsumexp(z_kv, axis=-1)
  logsm_kv = z_kv - lse_k[:, None]
  logp_k = jnp.take_along_axis(logsm_kv, lab_k[:, None], axis=-1)[:, 0]
  ent_k = -(jnp.exp(logsm_kv) * logsm_kv).sum(-1)
  return logsm_kv, logp_k, ent_k


def _used_chunks(count, chunk: int) -> jax.Array:
  return (count + chunk - 1) // chunk


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _logprobs(x_dnd, w, labels_dn, count, chunk, temperature, w_layout, entropy):
  return _forward(x_dnd, w, labels_dn, count, chunk, temperature, w_layout, entropy)


def _forward(x_dnd, w, labels_dn, count, chunk, temperature, w_layout, entropy):
  d, n, _ = x_dnd.shape

  def body(i, out):
    logp_dn, ent_dn = out
    x_kd, lab_k = _chunk(x_dnd, labels_dn, i, chunk)
    _, logp_k, ent_k = _stats(_logits(x_kd, w, temperature, w_layout), lab_k)
    put = lambda buf, v: jax.lax.dynamic_update_slice_in_dim(buf, v.reshape(d, chunk), i * chunk, axis=1)
    return put(logp_dn, logp_k), (put(ent_dn, ent_k) if entropy else ent_dn)

  zeros = jnp.zeros((d, n), jnp.float32)
  return jax.lax.fori_loop(0, _used_chunks(count, chunk), body, (zeros, zeros))


def _fwd(x_dnd, w, labels_dn, count, chunk, temperature, w_layout, entropy):
  out = _forward(x_dnd, w, labels_dn, count, chunk, temperature, w_layout, entropy)
  return out, (x_dnd, w, labels_dn, count)


def _bwd(chunk, temperature, w_layout, entropy, res, cotangents):
  x_dnd, w, labels_dn, count = res
  g_logp_dn, g_ent_dn = cotangents
  d, _, dm = x_dnd.shape

  def body(i, grads):
    dx_dnd, dw = grads
    x_kd, lab_k = _chunk(x_dnd, labels_dn, i, chunk)
    logsm_kv, _, ent_k = _stats(_logits(x_kd, w, temperature, w_layout), lab_k)
    p_kv = jnp.exp(logsm_kv)
    g_lp_k = jax.lax.dynamic_slice_in_dim(g_logp_dn, i * chunk, chunk, axis=1).reshape(-1)
    # d logp / dz = onehot(label) - p;  d entropy / dz = -p (log p + entropy).
    onehot_kv = jnp.arange(p_kv.shape[1], dtype=jnp.int32)[None] == lab_k[:, None]
    dz_kv = g_lp_k[:, None] * (onehot_kv - p_kv)
    if entropy:
      g_ent_k = jax.lax.dynamic_slice_in_dim(g_ent_dn, i * chunk, chunk, axis=1).reshape(-1)
      dz_kv -= g_ent_k[:, None] * p_kv * (logsm_kv + ent_k[:, None])
    dz_kv = (dz_kv / temperature).astype(x_dnd.dtype)
    if w_layout == "dv":
      dx_kd = jnp.einsum("kv,dv->kd", dz_kv, w, preferred_element_type=jnp.float32)
      dw += jnp.einsum("kd,kv->dv", x_kd, dz_kv, preferred_element_type=jnp.float32)
    else:
      dx_kd = jnp.einsum("kv,vd->kd", dz_kv, w, preferred_element_type=jnp.float32)
      dw += jnp.einsum("kv,kd->vd", dz_kv, x_kd, preferred_element_type=jnp.float32)
    dx_dnd = jax.lax.dynamic_update_slice_in_dim(dx_dnd, dx_kd.reshape(d, chunk, dm).astype(x_dnd.dtype),
                                                 i * chunk, axis=1)
    return dx_dnd, dw

  # The head's gradient keeps the weight's sharding (a float32 [V, D] replicated on every device
  # would be GBs for a 150k vocabulary).
  w_names = ("embed", "vocab") if w_layout == "dv" else ("vocab", "embed")
  init = (jnp.zeros_like(x_dnd), sharding.constrain(jnp.zeros(w.shape, jnp.float32), w_names))
  dx_dnd, dw = jax.lax.fori_loop(0, _used_chunks(count, chunk), body, init)
  return dx_dnd, dw.astype(w.dtype), None, None


_logprobs.defvjp(_fwd, _bwd)
