"""Continuous batching inside the jit: a queue of B prompts decoded over S = max_num_seqs slots.

  out, stats = rollout.generate(model, input_ids_bp, attention_mask_bp, rng, params)

The KV cache holds S slots (never B rows), each slot one left-aligned sequence with its own fill
index (`KVCache.init(..., per_row=True)`). Three pieces, as JetStream's prefill / insert /
generate:

  refill   take up to G = `refill_rows(S)` waiting prompts, prefill them together in chunks of
           `params.prefill_chunk` tokens into a [G]-row cache (memory G x P, work up to the
           longest of the G), sample each one's first token and insert the rows into free slots;
  decode   one token for every slot: each row writes at its own index and attends over the first
           max(index) + 1 slots only, rounded up to a block (`ragged_decode_attention`);
  drain    once the queue is empty and at most S/2 rows live, the live slots are gathered into a
           cache of S/2 slots and decoding goes on there; then S/4 and S/8 (`DRAIN_STEPS`), so
           a decode step runs at most twice the live rows until fewer than S/16 remain.

One `lax.while_loop` runs refill rounds, each followed by decode steps until G slots are free;
the drain is one loop per size. Everything has static shapes and compiles once.

Randomness: token t of batch row b is drawn with `fold_in(rng, b x max_new_tokens + t)`, so a row's draws
do not depend on which slot it ran in, on S, or on the other rows (up to the float rounding of
the batched matrix products).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from grlo_jax import sharding
from grlo_jax.models import KVCache, Transformer
from grlo_jax import static_sampler
from grlo_jax.decoding import SampleOutput, SamplingParams, finish, is_stop, sample_logits

READ_BLOCK = 128  # cache slots: a decode step's attention length is a multiple of this


def refill_rows(num_slots: int) -> int:
  """Prompts a refill round prefills together (G): few enough that a slot waits little for the
  group to fill, several so that the prefill's matrix products are not one row thin."""
  return max(1, num_slots // 8)


def prefill_chunk(p: SamplingParams, prompt_len: int) -> int:
  """Tokens a refill's prefill runs at a time: `p.prefill_chunk`, or the prompt width when that is
  shorter (a wider chunk only computes padding)."""
  return max(1, min(p.prefill_chunk, prompt_len))


DRAIN_STEPS = 3  # halvings in the drain: each is one more compiled decode step


def drain_sizes(num_slots: int) -> list[int]:
  """The slot counts the drain decodes at: S/2, S/4, S/8 (those >= 1)."""
  return [n for n in (num_slots >> i for i in range(1, DRAIN_STEPS + 1)) if n >= 1]


@struct.dataclass
class RolloutStats:
  """What the rollout computed, counted in the loop: the numerator of `perf/rollout_flop_ratio`
  (`rl.flops.rollout_flops`) and the slot utilisation."""

  decode_iterations: jax.Array  # int32: decode steps run, at any batch size
  row_steps: jax.Array  # int32: sum over decode steps of the batch size each ran at
  decode_tokens: jax.Array  # int32: tokens those steps sampled (a row's first comes from its prefill)
  refills: jax.Array  # int32: refill rounds (prefills of waiting prompts into free slots)
  prefill_rows: jax.Array  # int32: rows prefilled (the head samples one token for each)
  prefill_tokens: jax.Array  # int32: token positions the prefills computed (rows x chunk x chunks run)
  prefill_pairs: jax.Array  # float32: query-key pairs of the prefills' attention (keys up to each chunk's end)
  decode_pairs: jax.Array  # float32: query-key pairs of the decode steps (rows x cache slots read)

  @classmethod
  def zeros(cls) -> RolloutStats:
    z, zf = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
    return cls(decode_iterations=z, row_steps=z, decode_tokens=z, refills=z, prefill_rows=z, prefill_tokens=z,
               prefill_pairs=zf, decode_pairs=zf)

  def metrics(self) -> dict[str, jax.Array]:
    """`rollout/slot_utilization` = decode-sampled tokens / row-steps computed, and the counts."""
    f = lambda x: x.astype(jnp.float32)
    return {"rollout/slot_utilization": self.decode_tokens / jnp.maximum(self.row_steps, 1).astype(jnp.float32),
            "rollout/decode_iterations": f(self.decode_iterations), "rollout/refills": f(self.refills),
            "rollout/row_steps": f(self.row_steps), "rollout/prefill_rows": f(self.prefill_rows),
            "rollout/prefill_tokens": f(self.prefill_tokens), "rollout/prefill_pairs": self.prefill_pairs,
            "rollout/decode_pairs": self.decode_pairs}


def static_stats(out: SampleOutput, prompt_len: int) -> RolloutStats:
  """The static sampler's counts: a prefill of all B rows, then every decode step runs all B rows
  over the whole cache (P + N slots) until the longest stops."""
  b, n = out.tokens.shape
  steps = jnp.maximum(jnp.max(out.lengths) - 1, 0)
  p = prompt_len
  return RolloutStats(decode_iterations=steps, row_steps=steps * b,
                      decode_tokens=jnp.sum(jnp.maximum(out.lengths - 1, 0)),
                      refills=jnp.zeros((), jnp.int32), prefill_rows=jnp.asarray(b, jnp.int32),
                      prefill_tokens=jnp.asarray(b * p, jnp.int32),
                      prefill_pairs=jnp.asarray(b * p * (p + 1) / 2, jnp.float32),
                      decode_pairs=(steps * b).astype(jnp.float32) * (p + n))


@struct.dataclass
class _Slots:
  cache: KVCache  # [S] rows, per-row index; a free slot's index is 0
  row_s: jax.Array  # int32: the batch row a slot serves (meaningful while live)
  t_s: jax.Array  # int32: tokens of that row sampled so far
  last_s: jax.Array  # int32: its last token (the next step's input)
  live_s: jax.Array  # bool: the row still decodes


@struct.dataclass
class _State:
  slots: _Slots
  tokens_bn: jax.Array
  logp_bn: jax.Array
  next_q: jax.Array  # int32: rows [0, next_q) have been taken from the queue
  stats: RolloutStats


def _row_keys(rng: jax.Array, row_s: jax.Array, t_s: jax.Array, n: int) -> jax.Array:
  """The key of token t of row b: `rng` folded with b x n + t (n = max_new_tokens)."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(row_s * n + t_s)


def _write(tokens_bn, logp_bn, row_s, t_s, ok_s, tok_s, logp_s):
  """Scatter each slot's token to (row, t) of the outputs; slots with `ok_s` False write nothing."""
  b = tokens_bn.shape[0]
  row_s = jnp.where(ok_s, row_s, b)  # out of range: dropped
  return (tokens_bn.at[row_s, t_s].set(tok_s, mode="drop"),
          logp_bn.at[row_s, t_s].set(logp_s, mode="drop"))


def align_left(ids_bp: jax.Array, mask_bp: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Left-padded prompts [B, P] -> the same prompts starting at column 0 (pad after), and their
  lengths [B]. The mask must be one contiguous run ending at column P - 1 (left padding)."""
  p = ids_bp.shape[1]
  len_b = mask_bp.astype(jnp.int32).sum(axis=1)
  col_bp = jnp.arange(p)[None] + (p - len_b)[:, None]
  ids_bp = jnp.take_along_axis(ids_bp, jnp.minimum(col_bp, p - 1), axis=1)
  return jnp.where(jnp.arange(p)[None] < len_b[:, None], ids_bp, 0).astype(jnp.int32), len_b


def _prefill(model: Transformer, layers, ids_gp: jax.Array, len_g: jax.Array, chunk: int,
             dtype: str | None) -> tuple[KVCache, jax.Array, jax.Array]:
  """Left-aligned prompts [G, P] (lengths len_g) through the model `chunk` tokens at a time, for as
  many chunks as the longest needs: (the [G]-row cache of P' >= P slots, hidden state [G, D] at
  each row's last prompt token, the chunks run)."""
  g, p = ids_gp.shape
  n_chunks = -(-p // chunk)
  ids_gp = jnp.pad(ids_gp, ((0, 0), (0, n_chunks * chunk - p)))
  cache = KVCache.init(model.cfg, g, n_chunks * chunk, dtype)
  if layers is not None:
    cache = cache.unstack()
  x_gd = jnp.zeros((g, model.cfg.hidden_size), jnp.dtype(model.cfg.dtype))
  col_c = jnp.arange(chunk)

  def body(carry):
    c, cache, x_gd = carry
    start = c * chunk
    ids_gc = jax.lax.dynamic_slice_in_dim(ids_gp, start, chunk, axis=1)
    mask_gc = (start + col_c)[None] < len_g[:, None]
    x_gcd, cache = model.hidden(ids_gc, mask_gc, cache=cache, layers=layers)
    last_g = len_g - 1 - start  # the last prompt token's column in this chunk
    here_g = (last_g >= 0) & (last_g < chunk)
    x_last_gd = jnp.take_along_axis(x_gcd, jnp.clip(last_g, 0, chunk - 1)[:, None, None], axis=1)[:, 0]
    return c + 1, cache, jnp.where(here_g[:, None], x_last_gd, x_gd)

  need = -(-jnp.max(len_g) // chunk)
  chunks, cache, x_gd = jax.lax.while_loop(lambda s: s[0] < need, body, (jnp.zeros((), jnp.int32), cache, x_gd))
  return cache, x_gd, chunks


def _refill(model: Transformer, layers, st: _State, ids_bp, len_b, rng, p: SamplingParams,
            g: int) -> _State:
  """Prefill up to `g` waiting prompts (as many as there are free slots) and insert them."""
  sl = st.slots
  b, prompt_len = ids_bp.shape
  s = sl.live_s.shape[0]
  k = jnp.minimum(jnp.minimum(g, s - sl.live_s.sum()), b - st.next_q)
  ok_g = jnp.arange(g) < k
  rows_g = jnp.minimum(st.next_q + jnp.arange(g), b - 1)
  slot_g = jnp.where(ok_g, jnp.nonzero(~sl.live_s, size=g, fill_value=s)[0], s)  # s: dropped
  len_g = jnp.where(ok_g, len_b[rows_g], 0)
  chunk = prefill_chunk(p, prompt_len)
  pre, x_gd, chunks = _prefill(model, layers, ids_bp[rows_g], len_g, chunk, p.cache_dtype)
  keys_g = _row_keys(rng, rows_g, jnp.zeros_like(rows_g), p.max_new_tokens)
  tok_g, logp_g = sample_logits(model.head(x_gd[:, None])[:, 0], keys_g, p)
  tokens_bn, logp_bn = _write(st.tokens_bn, st.logp_bn, rows_g, jnp.zeros_like(rows_g), ok_g, tok_g, logp_g)

  # Insert: the prefilled rows' first P slots into the chosen slots (JetStream's `insert`).
  def put(slot_x, pre_x, axis):  # axis of the cache's slot (sequence) dimension
    idx = (slice(None), slot_g) + (slice(None),) * (axis - 2) + (slice(0, prompt_len),)
    return slot_x.at[idx].set(jax.lax.slice_in_dim(pre_x, 0, prompt_len, axis=axis).astype(slot_x.dtype),
                              mode="drop")

  c = sl.cache
  ks = jax.tree.map(lambda a, b_: put(a, b_, 4), c.k_lbkhs, pre.k_lbkhs)
  vs = jax.tree.map(lambda a, b_: put(a, b_, 3), c.v_lbksh, pre.v_lbksh)
  fill_g = (jnp.arange(c.max_len)[None] < len_g[:, None])
  cache = c.replace(k_lbkhs=ks, v_lbksh=vs, mask_bs=c.mask_bs.at[slot_g].set(fill_g, mode="drop"),
                    pos_b=c.pos_b.at[slot_g].set(len_g, mode="drop"),
                    index=c.index.at[slot_g].set(len_g, mode="drop"))
  live_g = ok_g & ~is_stop(tok_g, p) & (p.max_new_tokens > 1)
  slots = _Slots(cache=cache, row_s=sl.row_s.at[slot_g].set(rows_g, mode="drop"),
                 t_s=sl.t_s.at[slot_g].set(1, mode="drop"), last_s=sl.last_s.at[slot_g].set(tok_g, mode="drop"),
                 live_s=sl.live_s.at[slot_g].set(live_g, mode="drop"))
  # Chunk c's queries see keys up to its end: chunk x (c + 1) chunk each, summed over the chunks.
  pairs = (g * chunk * chunk) * (chunks * (chunks + 1) / 2)
  stats = st.stats.replace(refills=st.stats.refills + 1, prefill_rows=st.stats.prefill_rows + g,
                           prefill_tokens=st.stats.prefill_tokens + g * chunk * chunks,
                           prefill_pairs=st.stats.prefill_pairs + pairs)
  return st.replace(slots=slots, tokens_bn=tokens_bn, logp_bn=logp_bn, next_q=st.next_q + k, stats=stats)


def _decode(model: Transformer, layers, st: _State, rng, p: SamplingParams) -> _State:
  """One token for every live slot."""
  sl = st.slots
  s = sl.live_s.shape[0]
  x_s1d, cache = model.hidden(sl.last_s[:, None], sl.live_s[:, None], cache=sl.cache, layers=layers)
  tok_s, logp_s = sample_logits(model.head(x_s1d)[:, 0], _row_keys(rng, sl.row_s, sl.t_s, p.max_new_tokens), p)
  tokens_bn, logp_bn = _write(st.tokens_bn, st.logp_bn, sl.row_s, sl.t_s, sl.live_s, tok_s, logp_s)
  t_s = sl.t_s + 1
  live_s = sl.live_s & ~is_stop(tok_s, p) & (t_s < p.max_new_tokens)
  cache = cache.replace(index=jnp.where(live_s, cache.index, 0))  # free slots read nothing
  stats = st.stats
  filled = jnp.max(jnp.where(sl.live_s, sl.cache.index, 0)) + 1  # as the model's ragged decode reads
  read = jnp.minimum(-(-filled // READ_BLOCK) * READ_BLOCK, sl.cache.max_len)
  stats = stats.replace(decode_iterations=stats.decode_iterations + 1, row_steps=stats.row_steps + s,
                        decode_tokens=stats.decode_tokens + sl.live_s.sum(dtype=jnp.int32),
                        decode_pairs=stats.decode_pairs + (s * read).astype(jnp.float32))
  return st.replace(slots=_Slots(cache=cache, row_s=sl.row_s, t_s=t_s, last_s=tok_s, live_s=live_s),
                    tokens_bn=tokens_bn, logp_bn=logp_bn, stats=stats)


def _compact(sl: _Slots, n: int, d: int) -> _Slots:
  """The live slots gathered into n, each of the d data shards keeping its own: shard i's S / d
  slots hold at most n / d live ones (`_shard_live`), which move to its n / d new slots. A gather
  inside each shard keeps the cache sharded (a global one makes XLA replicate the whole cache)."""
  s = sl.live_s.shape[0]
  keep_dn = jnp.argsort(~sl.live_s.reshape(d, s // d), axis=1, stable=True)[:, :n // d]  # shard-local

  def take(x, axis):
    x = x.reshape(x.shape[:axis] + (d, s // d) + x.shape[axis + 1:])
    idx = keep_dn.reshape((1,) * axis + (d, n // d) + (1,) * (x.ndim - axis - 2))
    y = jnp.take_along_axis(x, idx, axis=axis + 1)
    return y.reshape(y.shape[:axis] + (n,) + y.shape[axis + 2:])

  c = sl.cache
  cache = c.replace(k_lbkhs=jax.tree.map(lambda x: take(x, 1), c.k_lbkhs),
                    v_lbksh=jax.tree.map(lambda x: take(x, 1), c.v_lbksh),
                    mask_bs=take(c.mask_bs, 0), pos_b=take(c.pos_b, 0), index=take(c.index, 0))
  return _Slots(cache=cache, row_s=take(sl.row_s, 0), t_s=take(sl.t_s, 0), last_s=take(sl.last_s, 0),
                live_s=take(sl.live_s, 0))


def _shard_live(live_s: jax.Array, d: int) -> jax.Array:
  """d x the most live slots any of the d data shards holds: the drain halves the slots when this,
  not just the total, fits (every shard keeps its own rows)."""
  return d * live_s.reshape(d, -1).sum(axis=1, dtype=jnp.int32).max()


def _generate(graphdef: nnx.GraphDef, state: nnx.State, input_ids_bp: jax.Array, attention_mask_bp: jax.Array,
              rng: jax.Array, p: SamplingParams) -> tuple[SampleOutput, RolloutStats]:
  model = nnx.merge(graphdef, state)
  b, prompt_len = input_ids_bp.shape
  n = p.max_new_tokens
  s = min(p.max_num_seqs, b)
  g = refill_rows(s)
  unroll = p.unroll_decode if p.unroll_decode is not None else jax.default_backend() == "cpu"
  layers = model.decode_layers() if unroll else None
  ids_bp, len_b = align_left(input_ids_bp, attention_mask_bp)

  cache = KVCache.init(model.cfg, s, prompt_len + n, p.cache_dtype, per_row=True, read_block=READ_BLOCK)
  if unroll:
    cache = cache.unstack()
  zeros_s = jnp.zeros((s,), jnp.int32)
  slots = _Slots(cache=cache, row_s=zeros_s, t_s=zeros_s, last_s=zeros_s, live_s=jnp.zeros((s,), bool))
  st = _State(slots=slots, tokens_bn=sharding.constrain(jnp.full((b, n), p.pad_token_id, jnp.int32), ("batch", None)),
              logp_bn=jnp.zeros((b, n), jnp.float32), next_q=jnp.zeros((), jnp.int32), stats=RolloutStats.zeros())

  live = lambda st: st.slots.live_s.sum(dtype=jnp.int32)
  sizes = drain_sizes(s)
  first_drain = sizes[0] if sizes else 0
  d = math.gcd(sharding.data_shards(s), *sizes)  # data shards that the slots and each drain size split over
  shard_live = lambda st: _shard_live(st.slots.live_s, d)

  def refill_wanted(st):
    waiting = b - st.next_q
    return (waiting > 0) & (s - live(st) >= jnp.minimum(g, waiting))

  def decode_more(st):
    drained = (st.next_q == b) & (shard_live(st) <= first_drain)
    return (live(st) > 0) & ~refill_wanted(st) & ~drained

  def fill_round(st):
    st = _refill(model, layers, st, ids_bp, len_b, rng, p, g)
    return jax.lax.while_loop(decode_more, lambda st: _decode(model, layers, st, rng, p), st)

  st = jax.lax.while_loop(lambda st: st.next_q < b, fill_round, st)
  for i, size in enumerate(sizes):  # the drain: each size until at most the next one's rows live
    below = sizes[i + 1] if i + 1 < len(sizes) else 0
    st = st.replace(slots=_compact(st.slots, size, d))
    st = jax.lax.while_loop(lambda st, below=below: shard_live(st) > below,
                            lambda st: _decode(model, layers, st, rng, p), st)
  return finish(st.tokens_bn, st.logp_bn, p), st.stats


_generate_jit = jax.jit(_generate, static_argnames=("graphdef", "p"))


def generate(model: Transformer, input_ids_bp: jax.Array, attention_mask_bp: jax.Array, rng: jax.Array,
             params: SamplingParams) -> tuple[SampleOutput, RolloutStats]:
  """Sample for a left-padded prompt batch [B, P] over `params.max_num_seqs` slots (continuous
  batching; all B rows at once, the static sampler, when it is None or >= B); returns the
  output in the batch's row order, as `sampling.generate_with_params`, and the loop's counts."""
  if not params.max_num_seqs or params.max_num_seqs >= input_ids_bp.shape[0]:
    params = dataclasses.replace(params, max_num_seqs=None, prefill_chunk=SamplingParams.prefill_chunk)
    out = static_sampler.generate(model, input_ids_bp, attention_mask_bp, rng, params)
    return out, static_stats(out, input_ids_bp.shape[1])
  if params.prefill_chunk < 1:
    raise ValueError(f"rollout.prefill_chunk={params.prefill_chunk}; needs >= 1")
  graphdef, state = nnx.split(model)
  return _generate_jit(graphdef, state, input_ids_bp, attention_mask_bp, rng, params)
