"""The fused attention kernels that ship with jax, behind `attention.attend`'s contract.

  splash      TPU: `jax.experimental.pallas.ops.tpu.splash_attention` (causal mask + segment ids,
              GQA natively). Runs on CPU in interpret mode (tests).
  pallas_gpu  GPU: `jax.experimental.pallas.ops.gpu.attention.mha` (Triton flash attention with
              segment ids); K/V heads are repeated to the query heads (it has no GQA).
  cudnn       GPU: `jax.nn.dot_product_attention(implementation="cudnn")` with the allowed-pairs
              mask as its boolean `mask` ([B, 1, T, S] bytes, no float scores).

XLA cannot partition a Pallas kernel's custom call, so under a mesh each kernel runs in a
`shard_map` on every device's shard: rows over the batch axes, heads over the tensor axis when it
divides both the query and the KV heads (`_per_device`).

Both Pallas kernels compare segment ids only, so a padding query (id 0) would attend padding
keys: its output is set to 0 afterwards, as `attend` promises. They need the keys to be the
queries' own row (S == T, no offset); other calls (a prefill into a KV cache) go to `chunked`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from grlo_jax import sharding
from grlo_jax.models import chunked_attention
from grlo_jax.models.masks import allowed_mask
from grlo_jax.models.platform import platform


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def attend(impl: str, q_btnh, k_bskh, v_bskh, q_seg_bt, kv_seg_bs, q_offset, *,
           self_attention: bool) -> jax.Array:
  """[B, T, N, H]; `self_attention`: the keys are the queries' row (same segment ids, offset 0)."""
  if impl == "cudnn":
    mask_b1ts = allowed_mask(q_seg_bt, kv_seg_bs, q_offset)[:, None]
    o = jax.nn.dot_product_attention(q_btnh, k_bskh, v_bskh, mask=mask_b1ts, implementation="cudnn")
    return jnp.where(jnp.any(mask_b1ts, axis=-1).transpose(0, 2, 1)[..., None], o, 0).astype(q_btnh.dtype)
  if not self_attention:
    return chunked_attention.attend(q_btnh, k_bskh, v_bskh, q_seg_bt, kv_seg_bs, q_offset)
  interpret = platform() == "cpu"
  if impl == "splash":
    kernel = functools.partial(_splash, interpret=interpret)
  elif impl == "pallas_gpu":
    kernel = functools.partial(_pallas_gpu, interpret=interpret)
  else:
    raise ValueError(f"no kernel named {impl!r}")
  o = _per_device(kernel, q_btnh, k_bskh, v_bskh, q_seg_bt)
  return jnp.where((q_seg_bt != 0)[..., None, None], o, 0).astype(q_btnh.dtype)


def _per_device(kernel, q_btnh, k_btkh, v_btkh, seg_bt) -> jax.Array:
  """`kernel(q, k, v, seg)` on each device's shard of the current mesh (the whole arrays without one)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return kernel(q_btnh, k_btkh, v_btkh, seg_bt)
  # Heads split only when both counts divide: each shard must keep whole GQA groups.
  q_heads = sharding.spec(("act_heads",), q_btnh.shape[2:3], mesh)[0]
  kv_heads = sharding.spec(("act_kv_heads",), k_btkh.shape[2:3], mesh)[0]
  split = q_heads is not None and q_heads == kv_heads
  q_spec = sharding.spec(("batch", None, "act_heads" if split else None, None), q_btnh.shape, mesh)
  kv_spec = P(q_spec[0], None, q_spec[2], None)
  return jax.shard_map(kernel, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, P(q_spec[0], None)),
                       out_specs=q_spec, check_vma=False)(q_btnh, k_btkh, v_btkh, seg_bt)


def _pad_t(x, tp: int, value=0):
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, tp - x.shape[1])
  return jnp.pad(x, pad, constant_values=value)


@functools.lru_cache(maxsize=16)
def _splash_kernel(n: int, t: int, block: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  mask = sm.MultiHeadMask([sm.CausalMask((t, t)) for _ in range(n)])
  sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  # The mask tables must be concrete arrays, not tracers of whichever jit first built the kernel.
  with jax.ensure_compile_time_eval():
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _splash(q_btnh, k_btkh, v_btkh, seg_bt, *, interpret: bool) -> jax.Array:
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

  b, t, n, h = q_btnh.shape
  block = min(512, _round_up(t, 128))
  tp = _round_up(t, block)
  kernel = _splash_kernel(n, tp, block, interpret)
  # Splash takes heads first and leaves the 1/sqrt(H) scale to the caller.
  q_bnth = _pad_t(q_btnh * h**-0.5, tp).transpose(0, 2, 1, 3)
  k_bkth, v_bkth = (_pad_t(x, tp).transpose(0, 2, 1, 3) for x in (k_btkh, v_btkh))
  seg_bt = _pad_t(seg_bt, tp)
  one_row = lambda q, k, v, seg: kernel(q, k, v, segment_ids=sk.SegmentIds(q=seg, kv=seg))
  o_bnth = jax.vmap(one_row)(q_bnth, k_bkth, v_bkth, seg_bt)
  return o_bnth.transpose(0, 2, 1, 3)[:, :t]


def _pallas_gpu(q_btnh, k_btkh, v_btkh, seg_bt, *, interpret: bool) -> jax.Array:
  from jax.experimental.pallas.ops.gpu import attention as gpu_attention

  b, t, n, h = q_btnh.shape
  g = n // k_btkh.shape[2]
  block = min(128, _round_up(t, 16))
  tp = _round_up(t, block)
  k_btnh, v_btnh = (_pad_t(jnp.repeat(x, g, axis=2), tp) for x in (k_btkh, v_btkh))
  sizes = gpu_attention.BlockSizes(block_q=block, block_k=block, block_q_dkv=block, block_kv_dkv=block,
                                   block_q_dq=block, block_kv_dq=block)
  o = gpu_attention.mha(_pad_t(q_btnh, tp), k_btnh, v_btnh, _pad_t(seg_bt, tp), sm_scale=h**-0.5,
                        causal=True, block_sizes=sizes, interpret=interpret)
  return o[:, :t]
