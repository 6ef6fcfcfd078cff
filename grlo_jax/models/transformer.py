"""The decoder family (Qwen3 dense, Llama-3.x) in Flax NNX, with LM / value / score heads.

Layer weights are stacked on a leading `l` axis and the blocks run under `lax.scan`, so compile
time does not grow with depth. Positions come from the attention mask, so left- and right-padded
batches both work; with a `KVCache` the same call does prefill and one-token decode.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from grlo_jax import sharding
from grlo_jax.models import attention as attention_lib
from grlo_jax.models.config import ModelConfig
from grlo_jax.models.kv_cache import KVCache

DECODE_PAD = 16  # float columns (one cache line) appended to each decode weight's rows
_NEG_INF = -1e30  # finite, so a fully masked (padding) query row stays NaN-free

# Per-layer weights: name -> logical axes without the leading "layers" axis.
BLOCK_AXES: dict[str, tuple[str, ...]] = {
    "attn_norm_d": ("norm",),
    "wq_dnh": ("embed", "q_heads", "head_dim"),
    "wk_dkh": ("embed", "kv_heads", "head_dim"),
    "wv_dkh": ("embed", "kv_heads", "head_dim"),
    "wo_nhd": ("q_heads", "head_dim", "embed"),
    "q_norm_h": ("norm",),
    "k_norm_h": ("norm",),
    "mlp_norm_d": ("norm",),
    "wg_df": ("embed", "mlp"),
    "wu_df": ("embed", "mlp"),
    "wd_fd": ("mlp", "embed"),
}


def block_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  d, f, n, k, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  shapes = {"attn_norm_d": (d,), "wq_dnh": (d, n, h), "wk_dkh": (d, k, h), "wv_dkh": (d, k, h),
            "wo_nhd": (n, h, d), "q_norm_h": (h,), "k_norm_h": (h,), "mlp_norm_d": (d,),
            "wg_df": (d, f), "wu_df": (d, f), "wd_fd": (f, d)}
  if not cfg.qk_norm:
    del shapes["q_norm_h"], shapes["k_norm_h"]
  return shapes


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return y.astype(x.dtype) * w.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """[H/2] inverse frequencies, with Llama-3's smooth long-wavelength scaling if configured."""
  h = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  if cfg.rope_llama3 is None:
    return inv
  s = dict(cfg.rope_llama3)
  factor, lo, hi, ctx = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s[
      "original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv
  scaled = jnp.where(wavelen > ctx / lo, inv / factor, inv)
  smooth = (ctx / wavelen - lo) / (hi - lo)
  medium = (wavelen >= ctx / hi) & (wavelen <= ctx / lo)
  return jnp.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def apply_rope(x_btnh: jax.Array, pos_bt: jax.Array, inv_freq_h2: jax.Array) -> jax.Array:
  ang_bth2 = pos_bt[..., None].astype(jnp.float32) * inv_freq_h2
  cos, sin = jnp.cos(ang_bth2)[:, :, None], jnp.sin(ang_bth2)[:, :, None]
  x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_btnh.dtype)


def decode_attention(q_b1nh: jax.Array, k_bkhs: jax.Array, v_bksh: jax.Array,
                     mask_b1s: jax.Array) -> jax.Array:
  """Causal attention for one query token over a cache [B, K, H, S] / [B, K, S, H], as multiply-reduce fusions that read the cache in place.

  Written as dots, XLA:CPU copies every layer's freshly updated cache buffer before the dot reads
  it (two to three copies per buffer and step); as fusions it does not. Both reductions run over
  a non-minor axis (H of the keys, S of the values), so they vectorise along the other.
  """
  b, _, n, h = q_b1nh.shape
  q_bkgh = q_b1nh.reshape(b, k_bkhs.shape[1], -1, h).astype(jnp.float32)
  s_bkgs = jnp.sum(q_bkgh[..., None] * k_bkhs[:, :, None].astype(jnp.float32), axis=3) * h**-0.5
  s_bkgs = jnp.where(mask_b1s[:, None], s_bkgs, _NEG_INF)
  p_bkgs = jax.nn.softmax(s_bkgs, axis=-1)
  o_bkgh = jnp.sum(p_bkgs[..., None] * v_bksh[:, :, None].astype(jnp.float32), axis=3)
  return o_bkgh.reshape(b, 1, n, h).astype(q_b1nh.dtype)


def ragged_decode_attention(q_b1nh: jax.Array, k_bkhs: jax.Array, v_bksh: jax.Array, mask_b1s: jax.Array,
                            filled: jax.Array, block: int) -> jax.Array:
  """`decode_attention` over the first `filled` cache slots only (rounded up to a multiple of
  `block`): a `lax.switch` over the static lengths block, 2 x block, ..., S, so that a step's
  attention costs what the rows hold, not the cache's size. Slots from `filled` on must be masked."""
  s = k_bkhs.shape[-1]
  lens = sorted({min(s, block * i) for i in range(1, -(-s // block) + 1)}) if block > 0 else [s]
  if len(lens) == 1:
    return decode_attention(q_b1nh, k_bkhs, v_bksh, mask_b1s)

  which = jnp.sum(jnp.asarray(lens[:-1]) < filled)  # the first length >= filled
  return jax.lax.switch(which, [_decode_upto(n) for n in lens], q_b1nh, k_bkhs, v_bksh, mask_b1s)


@functools.cache
def _decode_upto(n: int):
  """`decode_attention` over the first n cache slots. One function object per n, so that JAX's
  trace cache serves every layer's switch branch after the first (a 36-layer model with 26 lengths
  traced 936 branches otherwise: most of the recipe step's lowering time)."""
  return lambda q, k, v, m: decode_attention(q, k[..., :n], v[:, :, :n], m[..., :n])


def _dense(x_btx: jax.Array, w: jax.Array, out: int) -> jax.Array:
  """[B, T, X] @ w (X, then output axes, flattened) -> [B, T, out] as one 2-D [B*T, X] x [X, Y] dot;
  columns past `out` (`decode_layers`' padding) are dropped.

  As a 3-D einsum, XLA:CPU's backward writes activation gradients transposed through slow strided
  loop fusions for the weight-gradient dots; 2-D it does not (a layer stack's backward ~25% faster)."""
  b, t, x = x_btx.shape
  y = x_btx.reshape(b * t, x) @ w.reshape(x, -1)
  return (y if y.shape[1] == out else y[:, :out]).reshape(b, t, out)


def _block(cfg: ModelConfig, inv_freq: jax.Array, x_btd: jax.Array, p: dict[str, jax.Array],
           pos_bt: jax.Array, attention, kv=None):
  """One pre-norm block. `kv` = (k_lbkhs, v_lbksh, l, index): write this step's k/v into layer
  `l` of the cache at slot `index` (only the new tokens, in place), then attend over the layer;
  `index` [B] (one token a row) writes each row at its own slot.
  `p` holds one layer's weights, stacked-layout names or `decode_layers`' (fused gate|up).
  `attention(q_btnh, k_bkhs, v_bksh) -> o_btnh` closes over the mask (`Transformer._attention`)."""
  dt = x_btd.dtype
  eps = cfg.rms_norm_eps
  b, t, d = x_btd.shape
  n, k, h, f = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
  h_btd = rms_norm(x_btd, p["attn_norm_d"], eps)
  q_btnh = _dense(h_btd, p["wq_dnh"].astype(dt), n * h).reshape(b, t, n, h)
  k_btkh = _dense(h_btd, p["wk_dkh"].astype(dt), k * h).reshape(b, t, k, h)
  v_btkh = _dense(h_btd, p["wv_dkh"].astype(dt), k * h).reshape(b, t, k, h)
  if cfg.qk_norm:
    q_btnh = rms_norm(q_btnh, p["q_norm_h"], eps)
    k_btkh = rms_norm(k_btkh, p["k_norm_h"], eps)
  q_btnh = sharding.constrain(apply_rope(q_btnh, pos_bt, inv_freq), ("batch", "seq", "act_heads", None))
  k_btkh = apply_rope(k_btkh, pos_bt, inv_freq)
  k_bkht, v_bkth = k_btkh.transpose(0, 2, 3, 1), v_btkh.transpose(0, 2, 1, 3)
  if kv is None:
    k_bkhs, v_bksh, new_kv = k_bkht, v_bkth, None
  else:
    k_lbkhs, v_lbksh, l, index = kv
    if jnp.ndim(index) == 1:  # per-row slots (rollout engine): a scatter of one token a row
      rows_b = jnp.arange(b)
      k_lbkhs = k_lbkhs.at[l, rows_b, :, :, index].set(k_bkht[..., 0].astype(k_lbkhs.dtype))
      v_lbksh = v_lbksh.at[l, rows_b, :, index].set(v_bkth[:, :, 0].astype(v_lbksh.dtype))
    else:
      k_lbkhs = jax.lax.dynamic_update_slice(k_lbkhs, k_bkht[None].astype(k_lbkhs.dtype), (l, 0, 0, 0, index))
      v_lbksh = jax.lax.dynamic_update_slice(v_lbksh, v_bkth[None].astype(v_lbksh.dtype), (l, 0, 0, index, 0))
    k_bkhs, v_bksh, new_kv = k_lbkhs[l], v_lbksh[l], (k_lbkhs, v_lbksh)
  o_btnh = attention(q_btnh, k_bkhs.astype(dt), v_bksh.astype(dt))
  x_btd = x_btd + _dense(o_btnh.reshape(b, t, n * h), p["wo_nhd"].astype(dt), d)
  x_btd = sharding.constrain(x_btd, ("batch", "seq", "act_embed"))
  h_btd = rms_norm(x_btd, p["mlp_norm_d"], eps)
  if "wgu_dx" in p:  # decode layout (`decode_layers`): one wider dot streams the weights faster
    g_btf, u_btf = jnp.split(_dense(h_btd, p["wgu_dx"].astype(dt), 2 * f), 2, axis=-1)
  else:
    g_btf = _dense(h_btd, p["wg_df"].astype(dt), f)
    u_btf = _dense(h_btd, p["wu_df"].astype(dt), f)
  a_btf = sharding.constrain(jax.nn.silu(g_btf) * u_btf, ("batch", "seq", "act_mlp"))
  x_btd = x_btd + _dense(a_btf, p["wd_fd"].astype(dt), d)
  return sharding.constrain(x_btd, ("batch", "seq", "act_embed")), new_kv


def lm_logits(x_xd: jax.Array, w: jax.Array, layout: str) -> jax.Array:
  """float32 logits [..., V] of hidden states [..., D] through the LM matrix `w`: [D, V] for
  layout "dv" (`lm_head_dv`), [V, D] for "vd" (a tied `embed_vd`)."""
  spec = "...d,dv->...v" if layout == "dv" else "...d,vd->...v"
  return jnp.einsum(spec, x_xd, w, preferred_element_type=jnp.float32)


def segment_positions(segment_ids_bt: jax.Array) -> jax.Array:
  """[B, T] int32 position of each token inside its (contiguous) segment: 0 where it starts."""
  t = segment_ids_bt.shape[1]
  idx_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), segment_ids_bt.shape)
  starts_bt = jnp.concatenate([jnp.ones_like(segment_ids_bt[:, :1], bool),
                               segment_ids_bt[:, 1:] != segment_ids_bt[:, :-1]], axis=1)
  return idx_bt - jax.lax.cummax(jnp.where(starts_bt, idx_bt, 0), axis=1)


class Blocks(nnx.Module):
  """The L decoder blocks, each weight stacked as [L, ...]."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    dt = jnp.dtype(cfg.param_dtype)
    for name, shape in block_shapes(cfg).items():
      full = (cfg.num_layers, *shape)
      value = jnp.ones(full, dt) if name.endswith("norm_d") or name.endswith("norm_h") else init(
          rngs.params(), full, dt)
      setattr(self, name, sharding.param(value, ("layers", *BLOCK_AXES[name])))

  def weights(self) -> dict[str, jax.Array]:
    return {name: getattr(self, name).value for name in BLOCK_AXES if hasattr(self, name)}


class Transformer(nnx.Module):
  """Decoder + one head. `cfg.head`: "lm" -> logits [B, T, V]; "value" -> values [B, T];
  "score" -> [B, num_labels] read at each row's last real token (as HF *ForSequenceClassification).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(0.02)
    dt = jnp.dtype(cfg.param_dtype)
    d = cfg.hidden_size
    self.embed_vd = sharding.param(init(rngs.params(), (cfg.vocab_size, d), dt), ("vocab", "embed"))
    self.blocks = Blocks(cfg, rngs)
    self.final_norm_d = sharding.param(jnp.ones((d,), dt), ("norm",))
    if cfg.head == "lm" and not cfg.tie_word_embeddings:
      self.lm_head_dv = sharding.param(init(rngs.params(), (d, cfg.vocab_size), dt), ("embed", "vocab"))
    elif cfg.head == "value":
      self.value_d = sharding.param(init(rngs.params(), (d,), dt), ("embed",))
      self.value_bias = sharding.param(jnp.zeros((), dt), ())
    elif cfg.head == "score":
      self.score_dc = sharding.param(init(rngs.params(), (d, cfg.num_labels), dt), ("embed", "classes"))

  def __call__(self, input_ids_bt: jax.Array, attention_mask: jax.Array | None = None, *,
               positions_bt: jax.Array | None = None, segment_ids_bt: jax.Array | None = None,
               cache: KVCache | None = None, frozen_layers: int = 0):
    """Head output; with `cache`, `(output, updated cache)`. With `segment_ids_bt` alone the
    score head reads each row's last non-padding token. `frozen_layers`: as in `hidden`."""
    x_btd, cache = self.hidden(input_ids_bt, attention_mask, positions_bt=positions_bt,
                               segment_ids_bt=segment_ids_bt, cache=cache, frozen_layers=frozen_layers)
    if attention_mask is None and segment_ids_bt is not None:
      attention_mask = segment_ids_bt != 0
    out = self.head(x_btd, attention_mask)
    return out if cache is None else (out, cache)

  def hidden(self, input_ids_bt: jax.Array, attention_mask: jax.Array | None = None, *,
             positions_bt: jax.Array | None = None, segment_ids_bt: jax.Array | None = None,
             cache: KVCache | None = None, layers: list[dict[str, jax.Array]] | None = None,
             frozen_layers: int = 0) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states [B, T, D] (and the updated cache).

    `segment_ids_bt` (int, 0 = padding) packs several sequences in a row: each attends only to
    itself, causally, and its positions restart at 0 (unless `positions_bt` is given). Without
    it, `attention_mask` marks the real tokens (one sequence a row).

    `layers` (from `decode_layers`) with a per-layer cache (`KVCache.unstack`) runs the blocks as
    a Python loop over separate buffers instead of a scan: on XLA:CPU each scan iteration copies
    its weight and cache slices, which dominates one-token decode steps.

    `frozen_layers` = k > 0 (full-sequence passes only) runs the embedding and the bottom k blocks
    outside the gradient: they get zero gradients and the backward pass stops at block k, so a
    step that trains only the top blocks costs about (2 + 4 (L - k) / L) / 6 of a full one.
    """
    cfg = self.cfg
    b, t = input_ids_bt.shape
    mask_bt = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    if frozen_layers and cache is not None:
      raise ValueError("frozen_layers is for full-sequence passes, not with a KV cache")
    if not 0 <= frozen_layers <= cfg.num_layers:
      raise ValueError(f"frozen_layers={frozen_layers}: must be in [0, num_layers={cfg.num_layers}]")
    if segment_ids_bt is not None:
      if cache is not None:
        raise ValueError("segment_ids_bt is for full-sequence passes, not with a KV cache")
      segment_ids_bt = segment_ids_bt.astype(jnp.int32)
      if positions_bt is None:
        positions_bt = segment_positions(segment_ids_bt)
    else:
      segment_ids_bt = mask_bt.astype(jnp.int32)
    if cache is None:
      if positions_bt is None:
        positions_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
      attention = self._attention(segment_ids_bt, segment_ids_bt, 0)
    else:
      if positions_bt is None:
        positions_bt = cache.pos_b[:, None] + jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
      if cache.index.ndim == 1:  # per-row fill positions: one token a row, at its own slot
        if t != 1:
          raise ValueError(f"a cache with per-row index takes one token a row, got input_ids_bt {input_ids_bt.shape}")
        slot_bs = cache.mask_bs.at[jnp.arange(b), cache.index].set(mask_bt[:, 0])
        filled = jnp.max(jnp.where(mask_bt[:, 0], cache.index, 0)) + 1
        block = cache.read_block
        attention = lambda q, k, v: ragged_decode_attention(q, k, v, slot_bs[:, None], filled, block)
      elif t == 1:
        slot_bs = jax.lax.dynamic_update_slice(cache.mask_bs, mask_bt, (0, cache.index))
        mask_b1s = slot_bs[:, None, :] & (jnp.arange(cache.max_len) <= cache.index)[None, None]
        attention = lambda q, k, v: decode_attention(q, k, v, mask_b1s)
      else:
        slot_bs = jax.lax.dynamic_update_slice(cache.mask_bs, mask_bt, (0, cache.index))
        attention = self._attention(segment_ids_bt, slot_bs.astype(jnp.int32), cache.index)
    dt = jnp.dtype(cfg.dtype)
    x_btd = jnp.take(self.embed_vd.value, input_ids_bt, axis=0).astype(dt)
    x_btd = sharding.constrain(x_btd, ("batch", "seq", "act_embed"))
    inv_freq = rope_inv_freq(cfg)

    def layer(x_btd, p):
      return _block(cfg, inv_freq, x_btd, p, positions_bt, attention)[0]

    if cfg.remat:
      layer = jax.checkpoint(layer, prevent_cse=False)

    if cache is None:
      run = lambda x_btd, w: jax.lax.scan(lambda x, p: (layer(x, p), None), x_btd, w)[0]
      w = self.blocks.weights()
      if frozen_layers:
        x_btd = jax.lax.stop_gradient(run(x_btd, jax.tree.map(lambda v: v[:frozen_layers], w)))
        w = jax.tree.map(lambda v: v[frozen_layers:], w)
      x_btd = run(x_btd, w)
    elif layers is not None:
      ks, vs = list(cache.k_lbkhs), list(cache.v_lbksh)
      for l, p in enumerate(layers):
        x_btd, (ks[l], vs[l]) = _block(cfg, inv_freq, x_btd, p, positions_bt, attention,
                                       (ks[l], vs[l], 0, cache.index))
      cache = cache.replace(k_lbkhs=tuple(ks), v_lbksh=tuple(vs), mask_bs=slot_bs,
                            pos_b=cache.pos_b + mask_bt.sum(axis=1, dtype=jnp.int32), index=cache.index + t)
    else:
      def cached_layer(carry, p_and_l):
        x_btd, k_lbkhs, v_lbksh = carry
        p, l = p_and_l
        kv = (k_lbkhs, v_lbksh, l, cache.index)
        x_btd, (k_lbkhs, v_lbksh) = _block(cfg, inv_freq, x_btd, p, positions_bt, attention, kv)
        return (x_btd, k_lbkhs, v_lbksh), None

      (x_btd, k_lbkhs, v_lbksh), _ = jax.lax.scan(
          cached_layer, (x_btd, cache.k_lbkhs, cache.v_lbksh),
          (self.blocks.weights(), jnp.arange(cfg.num_layers)))
      cache = cache.replace(k_lbkhs=k_lbkhs, v_lbksh=v_lbksh, mask_bs=slot_bs,
                            pos_b=cache.pos_b + mask_bt.sum(axis=1, dtype=jnp.int32),
                            index=cache.index + t)
    return rms_norm(x_btd, self.final_norm_d.value, cfg.rms_norm_eps), cache

  def _attention(self, q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array, q_offset):
    """`attention(q_btnh, k_bkhs, v_bksh)` for `_block`, through `attention.attend`."""
    impl = self.cfg.attention

    def attention(q_btnh, k_bkhs, v_bksh):
      return attention_lib.attend(q_btnh, k_bkhs.transpose(0, 3, 1, 2), v_bksh.transpose(0, 2, 1, 3),
                                  q_segment_ids_bt, kv_segment_ids_bs, q_offset=q_offset, impl=impl)

    return attention

  def decode_layers(self) -> list[dict[str, jax.Array]]:
    """The block weights as L separate per-layer dicts for `hidden(..., layers=...)` (a copy, made
    once per call): each projection flat [X, Y], gate and up fused into one [D, 2F] matrix
    `wgu_dx`, and every output width padded by `DECODE_PAD` columns. XLA:CPU streams a [8, X] x
    [X, Y] dot 15-20% faster when a weight row is not a multiple of 2 KiB apart (cache-set aliasing)."""
    d = self.cfg.hidden_size
    out = []
    for l in range(self.cfg.num_layers):
      p = {k: v[l] for k, v in self.blocks.weights().items()}
      p["wo_nhd"] = p["wo_nhd"].reshape(-1, d)
      p["wgu_dx"] = jnp.concatenate([p.pop("wg_df"), p.pop("wu_df")], axis=1)
      for k in ("wq_dnh", "wk_dkh", "wv_dkh", "wo_nhd", "wgu_dx", "wd_fd"):
        p[k] = jnp.pad(p[k].reshape(p[k].shape[0], -1), ((0, 0), (0, DECODE_PAD)))
      out.append(p)
    return out

  def lm_head_weight(self) -> tuple[jax.Array, str]:
    """The LM head's matrix and its layout: (`lm_head_dv` [D, V], "dv"), or the tied embedding
    (`embed_vd` [V, D], "vd")."""
    if self.cfg.head != "lm":
      raise ValueError(f"lm_head_weight needs head='lm', got head={self.cfg.head!r}")
    if self.cfg.tie_word_embeddings:
      return self.embed_vd.value, "vd"
    return self.lm_head_dv.value, "dv"

  def head(self, x_btd: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """Apply this model's head to hidden states (float32 output)."""
    cfg = self.cfg
    f32 = jnp.float32
    if cfg.head == "lm":
      w, layout = self.lm_head_weight()
      return lm_logits(x_btd, w.astype(x_btd.dtype), layout)
    if cfg.head == "value":
      v_bt = jnp.einsum("btd,d->bt", x_btd, self.value_d.value.astype(x_btd.dtype),
                        preferred_element_type=f32)
      return v_bt + self.value_bias.value.astype(f32)
    b, t, _ = x_btd.shape
    mask_bt = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    last_b = jnp.max(jnp.where(mask_bt, jnp.arange(t), 0), axis=1)
    x_bd = jnp.take_along_axis(x_btd, last_b[:, None, None], axis=1)[:, 0]
    return jnp.einsum("bd,dc->bc", x_bd, self.score_dc.value.astype(x_bd.dtype), preferred_element_type=f32)
