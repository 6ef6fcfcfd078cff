"""Where the step's sequences sit in rows: the one place that knows.

  layout = make_layout(cfg, seqs, n_mini)                  # Padded or Packed, built once
  logp_br = layout.log_probs(graphdef, params, temperature)   # a model over every sequence
  minis = layout.minis(data_b)                              # [n_mini, ...] for the update scan
  grads, aux = layout.accumulate(loss_fn, params, mini, info) # micro-batch gradients, summed

`Padded` keeps one sequence a row ([B, P + R], left-padded prompt then response) and runs the
passes over strided micro-batches of `micro_batch_size` rows. `Packed` (`actor.use_dynamic_bsz`)
lays each mini-batch's real tokens into rows of `ppo_max_token_len_per_device` (`rl.packed`),
one row per data-parallel device a micro-batch, and skips rows that hold no token. Both hand back
per-sequence response values [B, R] and take [B, ...] per-sequence data, so the phases (scoring,
rewards, updates) are the same code for either.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
from flax import nnx

from grlo_jax import sharding
from grlo_jax.rl import losses, packed


@dataclasses.dataclass(frozen=True)
class Sequences:
  """The rollout's sequences: left-padded prompts [B, P] then right-padded responses [B, R]."""

  prompt_ids_bp: jax.Array
  prompt_mask_bp: jax.Array  # bool
  resp_br: jax.Array
  mask_br: jax.Array  # bool

  @property
  def prompt_len(self) -> int:
    return self.prompt_ids_bp.shape[1]

  @property
  def ids_bt(self) -> jax.Array:
    return jnp.concatenate([self.prompt_ids_bp, self.resp_br], axis=1)

  @property
  def mask_bt(self) -> jax.Array:
    return jnp.concatenate([self.prompt_mask_bp, self.mask_br], axis=1)


def split(x: jax.Array, *groups: int) -> jax.Array:
  """[B, ...] -> [*groups, B / prod(groups), ...], each group strided over the batch so every
  piece keeps rows from every data shard (no resharding of the batch axis)."""
  rows = x.shape[0]
  per = rows // math.prod(groups)
  y = x.reshape(per, *groups, *x.shape[1:])
  y = jnp.moveaxis(y, 0, len(groups))
  return sharding.constrain(y, (None,) * len(groups) + ("batch",) + (None,) * (x.ndim - 1))


def merge(y: jax.Array, ngroups: int) -> jax.Array:
  """Inverse of `split`."""
  y = jnp.moveaxis(y, ngroups, 0)
  return y.reshape(-1, *y.shape[1 + ngroups:])


def split_minis(x: jax.Array, n_mini: int, k: int) -> jax.Array:
  """[B, ...] -> [n_mini, k, B / (n_mini k), ...]: mini-batch g holds the rows with index % n_mini
  == g whatever k (the packed path's `packed.split_shards` takes the same rows), then k strided
  micro-batches of it."""
  per = x.shape[0] // (n_mini * k)
  y = jnp.moveaxis(x.reshape(per, k, n_mini, *x.shape[1:]), (2, 1), (0, 1))
  return sharding.constrain(y, (None, None, "batch") + (None,) * (x.ndim - 1))


def map_micro(fn, k: int, *xs):
  """fn over k strided micro-batches of the batch (bounds activation memory), results re-joined.
  Each of `xs` is a pytree of batch-major arrays."""
  out = jax.lax.map(lambda args: fn(*args), jax.tree.map(lambda x: split(x, k), xs))
  return jax.tree.map(lambda y: merge(y, 1), out)


def _accepts_rm_forward(reward_fn) -> bool:
  try:
    return "rm_forward" in inspect.signature(reward_fn).parameters
  except (TypeError, ValueError):
    return False


def _zero_grads_and_aux(loss_fn, params, first, info):
  zeros = jax.tree.map(jnp.zeros_like, params)
  aux0 = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: loss_fn(params, first, info)[1]))
  return zeros, aux0


def _micro_step(loss_fn, params, info):
  def micro(acc, mb):
    (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb, info)
    return jax.tree.map(jnp.add, acc, (g, aux)), None
  return micro


def accumulate(loss_fn, params, micro: dict, info) -> tuple:
  """(sum of gradients, sum of aux) of `loss_fn(params, mb, info) -> (loss, aux)` over the
  micro-batches `micro` [k, ...] (`split`), one at a time: activations of one micro-batch live."""
  zeros, aux0 = _zero_grads_and_aux(loss_fn, params, jax.tree.map(lambda x: x[0], micro), info)
  (grads, aux), _ = jax.lax.scan(_micro_step(loss_fn, params, info), (zeros, aux0), micro)
  return grads, aux


class Layout:
  """What every layout answers; the phases call only these methods.

  log_probs / values: [B, R] per-sequence response outputs of a model over every sequence.
  scores: [B] reward scores. minis: per-sequence data [B, ...] -> the update scan's mini-batches.
  accumulate: summed micro-batch gradients of a loss. update_log_probs / update_values: a
  micro-batch's outputs and loss mask inside a loss. metrics: the layout's own counts.
  """

  def __init__(self, seqs: Sequences, n_mini: int, micro_batch_size: int, mini_size: int):
    self.seqs = seqs
    self.n_mini = n_mini
    b = seqs.resp_br.shape[0]
    self.n_micro = b // micro_batch_size  # micro-batches of the whole batch
    self.k = mini_size // micro_batch_size  # micro-batches of a mini-batch
    self.ids_bt, self.mask_bt = seqs.ids_bt, seqs.mask_bt

  def metrics(self) -> dict[str, jax.Array]:
    return {}

  def scores(self, reward_fn, state, batch_rep: dict, roll) -> jax.Array:
    """[B] float32 scores of `reward_fn` (an RM forward inside it), micro-batch by micro-batch."""
    return map_micro(lambda rep, ro: reward_fn(state, rep, rep["input_ids_bp"],
                                               rep["attention_mask_bp"].astype(bool), ro),
                     self.n_micro, batch_rep, roll).astype(jnp.float32)


class Padded(Layout):
  """One sequence a row: every pass runs on [b, P + R] micro-batches of `micro_batch_size` rows."""

  # Scoring passes: a model over every sequence, per-sequence response values back.
  def _logits(self, graphdef, params, ids_bt, mask_bt, temperature: float) -> jax.Array:
    """[b, R, V] float32 logits that predict each response token (positions P-1 .. P+R-2)."""
    p = self.seqs.prompt_len
    model = nnx.merge(graphdef, params)
    x_btd, _ = model.hidden(ids_bt, mask_bt)
    logits = model.head(x_btd[:, p - 1:-1])
    return logits / temperature if temperature > 0 else logits

  def _values(self, graphdef, params, ids_bt, mask_bt) -> jax.Array:
    p = self.seqs.prompt_len
    model = nnx.merge(graphdef, params)
    return model(ids_bt, attention_mask=mask_bt)[:, p - 1:-1]

  def log_probs(self, graphdef, params, temperature: float) -> jax.Array:
    """[B, R] log-probs of the response tokens."""
    def one(seq, m, resp):
      return losses.logprobs_from_logits(self._logits(graphdef, params, seq, m, temperature), resp)
    return map_micro(one, self.n_micro, self.ids_bt, self.mask_bt, self.seqs.resp_br)

  def values(self, graphdef, params) -> jax.Array:
    """[B, R] critic values at the positions that predict each response token."""
    return map_micro(lambda seq, m: self._values(graphdef, params, seq, m), self.n_micro, self.ids_bt,
                     self.mask_bt)

  # Updates: mini-batches of per-sequence data, micro-batches inside them.
  def minis(self, data: dict) -> dict:
    """Per-sequence data [B, ...] -> mini-batches [n_mini, k, b, ...], the sequences added."""
    data = data | {"seq": self.ids_bt, "seq_mask": self.mask_bt, "resp": self.seqs.resp_br}
    return jax.tree.map(lambda x: split_minis(x, self.n_mini, self.k), data)

  def accumulate(self, loss_fn, params, mini: dict, info: dict):
    """Sum of `loss_fn(params, micro, info)`'s gradients and aux over the mini-batch's micro-batches."""
    return accumulate(loss_fn, params, mini, info)

  def update_log_probs(self, graphdef, params, mb: dict, temperature: float):
    """(log-probs, entropies, loss mask) [b, R] of a micro-batch's response tokens."""
    logits = self._logits(graphdef, params, mb["seq"], mb["seq_mask"], temperature)
    return (losses.logprobs_from_logits(logits, mb["resp"]), losses.entropy_from_logits(logits), mb["mask"])

  def update_values(self, graphdef, params, mb: dict):
    """(values, loss mask) [b, R] of a micro-batch."""
    return self._values(graphdef, params, mb["seq"], mb["seq_mask"]), mb["mask"]


class Packed(Layout):
  """Each mini-batch's real tokens in rows of `row_len`, each data-parallel device its own rows
  (`rl.packed`); a micro-batch is one row per device, and rows without tokens are skipped."""

  def __init__(self, seqs: Sequences, n_mini: int, micro_batch_size: int, mini_size: int, row_len: int):
    super().__init__(seqs, n_mini, micro_batch_size, mini_size)
    b, r = seqs.resp_br.shape
    p = seqs.prompt_len
    if row_len < p + r:
      raise ValueError(f"actor.ppo_max_token_len_per_device={row_len} is shorter than the longest "
                       f"sequence: the batch's prompt length {p} + rollout.response_length {r}")
    self.row_len = row_len
    self.shards = sharding.data_shards(b // n_mini)
    self.rows = packed.pack_rows(self.ids_bt, self.mask_bt, n_mini, self.shards, row_len,
                                 packed.response_head_mask(seqs.prompt_mask_bp, seqs.mask_br))
    self.resp_off = packed.response_offsets(seqs.prompt_mask_bp, r, n_mini, self.shards)  # [g, d, s, R]
    self._rm_rows = []

  def metrics(self) -> dict[str, jax.Array]:
    out = {"perf/packed_rows": packed.executed_rows(self.rows),
           "perf/packed_head_positions": packed.executed_head_positions(self.rows)}
    if self._rm_rows:
      out["perf/packed_rm_rows"] = self._rm_rows[0]
    return out

  def log_probs(self, graphdef, params, temperature: float) -> jax.Array:
    row = lambda ids, seg, pos, head: packed.policy_outputs(graphdef, params, ids, seg, pos, head, temperature)[0]
    return packed.gather_sequences(packed.map_rows(row, self.rows), self.rows, self.resp_off)

  def values(self, graphdef, params) -> jax.Array:
    return packed.gather_sequences(packed.map_rows(
        lambda ids, seg, pos, _: packed.values(graphdef, params, ids, seg, pos), self.rows), self.rows,
        self.resp_off)

  def scores(self, reward_fn, state, batch_rep: dict, roll) -> jax.Array:
    """The reward model on packed rows when `reward_fn` takes `rm_forward`; else as `Padded`."""
    if not _accepts_rm_forward(reward_fn):
      return super().scores(reward_fn, state, batch_rep, roll)
    p, r = self.seqs.prompt_len, self.seqs.resp_br.shape[1]

    def rm_forward(rm_model, ids_bt, mask_bt):
      # Rows hold any one RM input: the budget plus what the RM input adds to prompt + response.
      score_b, used = packed.rm_scores(rm_model, ids_bt, mask_bt, self.row_len + ids_bt.shape[1] - (p + r))
      self._rm_rows.append(used)
      return score_b

    return reward_fn(state, batch_rep, self.seqs.prompt_ids_bp, self.seqs.prompt_mask_bp, roll,
                     rm_forward=rm_forward).astype(jnp.float32)

  def minis(self, data: dict) -> dict:
    """Mini-batch g: its sequences [d * s, ...] (device-major, as packed) and its packed rows."""
    n_mini, shards = self.n_mini, self.shards
    minis = jax.tree.map(lambda x: sharding.constrain(
        packed.split_shards(x, n_mini, shards).reshape(n_mini, -1, *x.shape[1:]),
        (None, "batch") + (None,) * (x.ndim - 1)), data)
    return minis | {"rows": self.rows, "off": self.resp_off}

  @staticmethod
  def _micro(mini: dict, r) -> dict:
    """Micro-batch r of a packed mini-batch: each device's row r, the mini-batch's sequences."""
    rws = mini["rows"]
    row = lambda x: x[:, r]
    return mini | {"rows": rws.replace(ids=row(rws.ids), seg=row(rws.seg), pos=row(rws.pos), head=row(rws.head)),
                   "r": r}

  def accumulate(self, loss_fn, params, mini: dict, info: dict):
    zeros, aux0 = _zero_grads_and_aux(loss_fn, params, self._micro(mini, 0), info)
    micro = _micro_step(loss_fn, params, info)
    used = mini["rows"].layout.used.max()  # the busiest device's rows: later ones hold no token

    def packed_step(acc, r):
      return jax.lax.cond(r < used, lambda: micro(acc, self._micro(mini, r))[0], lambda: acc), None

    (grads, aux), _ = jax.lax.scan(packed_step, (zeros, aux0), jnp.arange(mini["rows"].ids.shape[1]))
    return grads, aux

  def update_log_probs(self, graphdef, params, mb: dict, temperature: float):
    rws = mb["rows"]
    logp_dl, ent_dl = packed.policy_outputs(graphdef, params, rws.ids, rws.seg, rws.pos, rws.head, temperature,
                                            entropy=True)
    logp, in_row = packed.row_of(logp_dl, rws.layout, mb["r"], mb["off"])
    ent, _ = packed.row_of(ent_dl, rws.layout, mb["r"], mb["off"])
    return logp, ent, mb["mask"] * in_row  # the mini-batch's sequences that lie in row r

  def update_values(self, graphdef, params, mb: dict):
    rws = mb["rows"]
    vpreds, in_row = packed.row_of(packed.values(graphdef, params, rws.ids, rws.seg, rws.pos),
                                   rws.layout, mb["r"], mb["off"])
    return vpreds, mb["mask"] * in_row


def make_layout(seqs: Sequences, *, n_mini: int, micro_batch_size: int, mini_size: int,
                pack: bool, row_len: int = 0) -> Layout:
  """`Packed` rows of `row_len` tokens when `pack`, else `Padded` rows."""
  if pack:
    return Packed(seqs, n_mini, micro_batch_size, mini_size, row_len)
  return Padded(seqs, n_mini, micro_batch_size, mini_size)

