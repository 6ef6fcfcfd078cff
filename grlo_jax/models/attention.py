"""Causal GQA attention over segment ids: the one entry point every full-sequence pass uses.

  o_btnh = attend(q_btnh, k_bskh, v_bskh, q_segment_ids_bt, kv_segment_ids_bs, impl="auto")

Query t of a row may attend key s when both carry the same non-zero segment id and
`s <= t + q_offset` (keys are indexed from the start of the row or cache; `q_offset` is the
slot of query 0). Padding (left or right), several packed sequences in one row and a
prefill into a cache are all just segment ids. A query with no key it may attend (a padding
token) gets 0. Positions (RoPE) are the caller's: they are applied before.

Implementations (`ModelConfig.attention`):
  xla         the dense reference: [B, K, G, T, S] float32 scores.
  chunked     flash-style online softmax over key blocks in plain JAX, with a custom VJP that
              recomputes each block's probabilities from the saved log-sum-exp (the backward of
              FlashAttention-2): memory O(T x block) per head in forward and backward. Key blocks
              that no query of a query block may attend (past the causal edge, or before the
              block's first segment in every row) are never visited.
  splash      TPU: jax's Pallas splash-attention kernel (causal mask + segment ids).
  cudnn       GPU: `jax.nn.dot_product_attention(implementation="cudnn")` with the allowed pairs
              as its boolean mask (bytes, not float scores).
  pallas_gpu  GPU: jax's Pallas (Triton) flash-attention kernel with segment ids.
The Pallas kernels serve self-attention (keys = the queries' row); a prefill into a KV cache
(`q_offset`, other key segment ids) takes `chunked` instead (models/kernels.py).
  auto        splash on TPU, pallas_gpu on GPU, on CPU xla for short rows (T <= AUTO_DENSE_MAX)
              and chunked above.

The platform is JAX's default backend unless `target_platform("tpu")` (or "gpu", "cpu") names
another: lowering for a TPU or GPU from a CPU host (grlo_jax/lowering.py) must pick, and build,
the kernels of the platform it lowers for.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from grlo_jax.models import chunked_attention, kernels
from grlo_jax.models.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS
from grlo_jax.models.masks import allowed_mask  # noqa: F401 (re-exported: attention.allowed_mask)
from grlo_jax.models.platform import BACKENDS, platform, target_platform  # noqa: F401 (re-exported)

AUTO_DENSE_MAX = 128  # CPU: dense is as fast up to this row length; chunked is faster above (docs/benchmarks.md)
_NEG_INF = -1e30  # finite, so a fully masked row stays NaN-free
def check_impl(impl: str) -> str:
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"model.attention={impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
  return impl


def resolve(impl: str, t: int, s: int, backend: str | None = None) -> str:
  """The implementation `auto` stands for on `backend` (default: `platform()`) at T queries x S keys."""
  check_impl(impl)
  if impl != "auto":
    return impl
  backend = BACKENDS.get(backend, backend) if backend else platform()
  if backend == "tpu":
    return "splash"
  if backend == "gpu":
    return "pallas_gpu"
  return "xla" if max(t, s) <= AUTO_DENSE_MAX else "chunked"


def attend(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, q_segment_ids_bt: jax.Array,
           kv_segment_ids_bs: jax.Array | None = None, *, q_offset: jax.Array | int = 0,
           impl: str = "auto", block: int | None = None) -> jax.Array:
  """Causal attention with GQA (N query heads over K kv heads) restricted to segments.

  Args:
    q_btnh: queries [B, T, N, H]; k_bskh, v_bskh: keys and values [B, S, K, H].
    q_segment_ids_bt: int [B, T], 0 = padding; kv_segment_ids_bs: int [B, S] (default: the
      queries', when S == T).
    q_offset: the key index of query 0 (a scalar, or [B]); 0 for a plain forward.
    impl: one of IMPLEMENTATIONS. block: the chunked path's block size (default 512).
  Returns:
    [B, T, N, H] in q's dtype; 0 where a query may attend nothing.
  """
  # The Pallas kernels need keys from the queries' own row (`kernels.attend`).
  self_attention = (kv_segment_ids_bs is None or kv_segment_ids_bs is q_segment_ids_bt) and (
      isinstance(q_offset, int) and q_offset == 0)
  if kv_segment_ids_bs is None:
    kv_segment_ids_bs = q_segment_ids_bt
  q_seg = q_segment_ids_bt.astype(jnp.int32)
  kv_seg = kv_segment_ids_bs.astype(jnp.int32)
  impl = resolve(impl, q_btnh.shape[1], k_bskh.shape[1])
  if impl == "xla":
    return dense(q_btnh, k_bskh, v_bskh, allowed_mask(q_seg, kv_seg, q_offset))
  if impl == "chunked":
    return chunked_attention.attend(q_btnh, k_bskh, v_bskh, q_seg, kv_seg, q_offset, block=block)
  return kernels.attend(impl, q_btnh, k_bskh, v_bskh, q_seg, kv_seg, q_offset, self_attention=self_attention)


def dense(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, allowed_bts: jax.Array) -> jax.Array:
  """The reference: full [B, K, G, T, S] float32 scores, softmax, values."""
  b, t, n, h = q_btnh.shape
  q_btkgh = q_btnh.reshape(b, t, k_bskh.shape[2], -1, h)
  s_bkgts = jnp.einsum("btkgh,bskh->bkgts", q_btkgh, k_bskh, preferred_element_type=jnp.float32) * h**-0.5
  s_bkgts = jnp.where(allowed_bts[:, None, None], s_bkgts, _NEG_INF)
  p_bkgts = jax.nn.softmax(s_bkgts, axis=-1)
  p_bkgts = jnp.where(allowed_bts[:, None, None], p_bkgts, 0.0).astype(v_bskh.dtype)
  o_btkgh = jnp.einsum("bkgts,bskh->btkgh", p_bkgts, v_bskh)
  return o_btkgh.reshape(b, t, n, h)


@functools.partial(jax.jit, static_argnames=("impl", "block"))
def attend_jit(q_btnh, k_bskh, v_bskh, q_segment_ids_bt, kv_segment_ids_bs=None, q_offset=0, *,
               impl: str = "auto", block: int | None = None) -> jax.Array:
  """`attend` under its own jit (tests, benchmarks)."""
  return attend(q_btnh, k_bskh, v_bskh, q_segment_ids_bt, kv_segment_ids_bs, q_offset=q_offset,
                impl=impl, block=block)
