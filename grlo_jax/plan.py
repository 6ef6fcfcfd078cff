"""Memory planner: per-device bytes of the one-jit RL step for a config and a mesh, without compiling.

  p = plan.estimate(config, {"fsdp": 16})            # or a jax Mesh
  print(plan.format_table(p))
  plan.suggest_micro_batch(config, {"fsdp": 16}, hbm_bytes=95 * 2**30)

The step (`rl/step.py`) runs in phases one after the other. Its arguments (the train state: weights and
AdamW moments, donated and aliased with its outputs, and the prompt batch) are live throughout; each
phase adds temporaries on top, so the peak is `arguments + max over phases`:

  rollout    KV cache (keys [L, B, K, H, S], values [L, B, K, S, H]; S = P + R) + the prefill's
             activations on [B, P] attending over all S cache slots (the sampler's batch is the
             whole step batch); with `rollout.max_num_seqs` < B the engine's slot cache and
             refill prefill instead (`slot_rollout`)
  forward    old / reference log-probs and critic values, `lax.map` over micro-batches of m rows:
             one layer's activations on [m, T] (T = P + R) + the logits [m, R, V]
  reward     the reward model, micro-batch by micro-batch [b, T_rm]: one layer's activations
             (T_rm = P + R + the chat template's few tokens, or `reward.rm_max_length` when the
             host re-tokenizes for an RM with another tokenizer)
  update     a micro-batch's residuals for the backward pass (every layer's activations, or only
             each layer's input with remat) + logits + gradients (micro-batch and accumulator);
             the actor's and the critic's updates are independent and XLA interleaved them in
             the dumps we read (both count) except when the micro-batch was replicated (the larger)
  optimizer  AdamW on the accumulated gradients

Every tensor is divided by the mesh axes that `sharding.py`'s rules give its dimensions, when they
divide it (`sharding.spec`); a micro-batch of m rows splits over data x fsdp only when they divide m.

The multiplicities below (how many [.., L, B, T, F]-sized buffers a layer keeps for its backward,
how many copies of the logits and of the attention scores live at once) were read off XLA:CPU
buffer assignments (`--xla_dump_to`: `*-live-range.txt` lists what is live at the peak) of the
float32 step, and checked against `compile().memory_analysis()` in tests/test_plan.py. TPU's XLA
fuses more (a softmax need not keep its float32 exponentials), so on TPU the activation figures are
on the high side; weights, optimizer state, KV cache and gradients are exact byte counts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from grlo_jax import models, sharding
from grlo_jax.models import attention as attention_lib
from grlo_jax.models import chunked_attention
from grlo_jax.rl import build

GiB = 2**30

# Tokens the in-graph reward-model input adds to prompt + response (Qwen3's empty think block and
# turn end, `build.QWEN3_TEMPLATE`, which `build.lower_step` uses too).
RM_EXTRA_TOKENS = (len(build.QWEN3_TEMPLATE.assistant_prefix_ids) + len(build.QWEN3_TEMPLATE.turn_end_ids))

# --- Multiplicities (elements per token per layer unless said otherwise), from XLA:CPU dumps. ---
# Residuals a block keeps for its backward without remat: x, h, x_mid, h2 and the norms' float32
# intermediates (6 D); g, u, silu(g), a and two more MLP-sized values (6 F); q / k before and
# after their norm and RoPE, v, o (4 N H + 4 K H); and the attention scores and probabilities
# [N, S] per query token (float32 scores + probabilities in the compute dtype).
SAVED_D, SAVED_F, SAVED_QK = 6, 6, 4
# One block's forward temporaries without a backward (only one layer is live at a time).
FWD_D, FWD_F = 2, 2
FWD_SCORE_F32 = 1  # float32 [N, T, S] scores + the probabilities in the compute dtype
# A remat backward keeps each layer's input [m, T, D] and, for the layer in flight, its recomputed
# residuals and their gradients: REMAT_LAYER x one layer's residuals.
REMAT_LAYER = 1.4
REMAT_LAYER_FUSED = 0.8  # the same with fused attention (checked against compile(), tests/test_plan.py)
NOREMAT_LAYER = 1.0  # the last layer's gradient temporaries on top of all residuals
# Float32 [m, R, V] logits buffers: forward log-probs (logits, and logsumexp's exponentials), the
# update (logits, softmax for the entropy and the log-prob gradient, the logits' gradient).
LOGITS_FWD, LOGITS_BWD = 2, 3
# AdamW's temporaries on top of the accumulated gradients (the updates; the rest fuses in place).
OPT_TEMPS = 1
# Fused attention (`model.attention` other than the dense `xla`, models/attention.py) keeps no
# [N, S] scores: per query token only the log-sum-exp (N float32) and the kernels' own copies of
# q, k, v, o in their blocked or heads-first layouts (FUSED_COPIES x (N + K) H); the scores and
# probabilities of the one block pair in flight, [rows, N, block, block] float32, forward
# (FUSED_BLOCK_FWD of them) and backward (FUSED_BLOCK_BWD: scores, probabilities, dP, dS), and the
# backward's float32 dQ accumulator [rows, T, N, H]. TPU and GPU kernels keep their blocks in
# on-chip memory: no block term there.
FUSED_COPIES, FUSED_BLOCK_FWD, FUSED_BLOCK_BWD = 2, 3, 5
# XLA packs temporaries into one heap; its size exceeds the live bytes at the peak by this factor
# (XLA:CPU: 1.05 - 1.2 on the step).
HEAP_SLACK = 1.1


@dataclasses.dataclass(frozen=True)
class Plan:
  """Bytes per device of each part of the step, and of each phase (arguments included)."""

  mesh: dict[str, int]
  micro_batch_size: int  # responses per micro-batch (global); rows per device in `rows_per_device`
  rows_per_device: int
  remat: bool
  params: dict[str, int]  # role -> weights: actor, critic, rm, ref (absent roles left out)
  optimizer: int  # AdamW mu and nu of the actor and the critic
  inputs: int  # the prompt batch
  kv_cache: int
  rollout_buffers: int  # responses, masks, log-probs, values, advantages (and their mini-batch split)
  act_prefill: int  # the sampler's prefill, one layer, the whole batch
  act_forward: int  # one forward micro-batch of the largest model (old / ref log-probs, values)
  act_reward: int  # the reward model on a micro-batch, one layer
  act_backward_remat: int  # an update micro-batch's activations with remat (actor + critic)
  act_backward_no_remat: int  # the same without remat
  logits: int  # the update's float32 logits buffers [m, R, V]
  gradients: int  # micro-batch gradients + accumulators of the actor and the critic
  gathered: int  # weights all-gathered over fsdp for one layer and the embedding / head
  phases: dict[str, int]  # phase -> arguments + that phase's temporaries

  @property
  def arguments(self) -> int:
    return sum(self.params.values()) + self.optimizer + self.inputs

  @property
  def act_backward(self) -> int:
    return self.act_backward_remat if self.remat else self.act_backward_no_remat

  @property
  def peak_phase(self) -> str:
    return max(self.phases, key=self.phases.get)

  @property
  def total(self) -> int:
    return self.phases[self.peak_phase]

  def fits(self, hbm_bytes: float, margin: float = 0.9) -> bool:
    return self.total <= margin * hbm_bytes

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    return d | {"arguments": self.arguments, "act_backward": self.act_backward,
                "peak_phase": self.peak_phase, "total": self.total}


# --- Sharding: per-device sizes through sharding.py's rules. ---

def _mesh_shape(mesh: Mesh | Mapping[str, int]) -> dict[str, int]:
  shape = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
  unknown = set(shape) - set(sharding.MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {sharding.MESH_AXES}")
  if any(int(v) < 1 for v in shape.values()):
    raise ValueError(f"mesh sizes must be >= 1 (resolve -1 first), got {shape}")
  return {a: int(shape.get(a, 1)) for a in sharding.MESH_AXES}


def per_device(shape: tuple[int, ...], names: tuple[str | None, ...], mesh_shape: Mapping[str, int]) -> int:
  """Elements per device of a [shape] tensor with logical `names`: each dimension divided by the
  mesh axes `sharding.spec` gives it (none when they do not divide it)."""
  spec = sharding.spec(names, shape, types.SimpleNamespace(shape=mesh_shape))
  n = 1
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    n *= size // math.prod(mesh_shape[a] for a in axes)
  return n


def _itemsize(dtype: str) -> int:
  return jnp.dtype(dtype).itemsize


@dataclasses.dataclass(frozen=True)
class _Dims:
  """One model's dimensions per device (heads, MLP and vocabulary split over tensor when divisible)."""

  cfg: models.ModelConfig
  d: int  # D (activations keep the model dimension whole)
  f: int  # F / tensor
  n: int  # N / tensor
  k: int  # K / tensor
  h: int
  v: int  # V / tensor
  c: int  # compute dtype bytes
  backend: str  # whose `model.attention=auto` choice is counted

  @classmethod
  def of(cls, cfg: models.ModelConfig, ms: Mapping[str, int], backend: str) -> _Dims:
    one = lambda size, name: per_device((size,), (name,), ms)
    return cls(cfg=cfg, d=cfg.hidden_size, f=one(cfg.intermediate_size, "act_mlp"),
               n=one(cfg.num_heads, "act_heads"), k=one(cfg.num_kv_heads, "act_kv_heads"), h=cfg.head_dim,
               v=one(cfg.vocab_size, "act_vocab"), c=_itemsize(cfg.dtype), backend=backend)

  def attention(self, t: int, s: int) -> str:
    return attention_lib.resolve(self.cfg.attention, t, s, self.backend)

  def _block_pair(self, rows: int, t: int, s: int) -> int:
    """Float32 elements of one [rows, N, block, block] score block (0 for on-chip kernels)."""
    if self.attention(t, s) != "chunked":
      return 0
    block = chunked_attention.DEFAULT_BLOCK
    return rows * self.n * min(block, t) * min(block, s)

  def saved_layer(self, rows: int, t: int, s: int) -> int:
    """Bytes one block keeps for its backward (no remat), [rows, t] queries over s keys."""
    lin_td = SAVED_D * self.d + SAVED_F * self.f + SAVED_QK * (self.n + self.k) * self.h
    if self.attention(t, s) == "xla":
      return rows * t * (lin_td * self.c + self.n * s * (4 + self.c))
    fused_td = FUSED_COPIES * (self.n + self.k) * self.h * self.c + self.n * 4
    return rows * t * (lin_td * self.c + fused_td)

  def attention_backward(self, rows: int, t: int, s: int) -> int:
    """Bytes the backward of one fused attention adds while it runs (0 for the dense path,
    whose temporaries are its saved scores): the dQ accumulator and the block pair in flight."""
    if self.attention(t, s) == "xla":
      return 0
    return rows * t * self.n * self.h * 4 + FUSED_BLOCK_BWD * 4 * self._block_pair(rows, t, s)

  def layers_backward(self, rows: int, t: int, with_remat: bool) -> tuple[int, int]:
    """(bytes kept for the backward of all layers, bytes of the layer in flight) on [rows, t]."""
    one, attn = self.saved_layer(rows, t, t), self.attention_backward(rows, t, t)
    if with_remat:
      in_flight = REMAT_LAYER if self.attention(t, t) == "xla" else REMAT_LAYER_FUSED
      return self.cfg.num_layers * self.stream(rows, t), int(in_flight * one) + attn
    return self.cfg.num_layers * one, int(NOREMAT_LAYER * one) + attn

  def forward_layer(self, rows: int, t: int, s: int) -> int:
    """Bytes of one block's forward temporaries (no backward), plus the causal mask [rows, t, s]."""
    lin_td = FWD_D * self.d + FWD_F * self.f + 2 * (self.n + self.k) * self.h
    if self.attention(t, s) == "xla":
      return rows * t * (lin_td * self.c + self.n * s * (4 * FWD_SCORE_F32 + self.c) + s)
    fused_td = FUSED_COPIES * (self.n + self.k) * self.h * self.c
    return rows * t * (lin_td * self.c + fused_td) + FUSED_BLOCK_FWD * 4 * self._block_pair(rows, t, s)

  def stream(self, rows: int, t: int) -> int:
    """The residual stream [rows, t, D] in the compute dtype."""
    return rows * t * self.d * self.c


@dataclasses.dataclass(frozen=True)
class _Weights:
  """One model's weights per device: as stored, and as the step all-gathers them for compute."""

  stored: int  # every parameter, param dtype, sharded
  layer_gathered: int  # one block's weights in the compute dtype, whole over data x fsdp
  head_gathered: int  # the LM head matrix (embed_vd when tied) in the compute dtype, whole over data x fsdp
  head_grad: int  # its float32 gradient before the reduce-scatter
  sharded: bool  # some weight is split over data x fsdp (so compute gathers it)
  cast: bool  # compute dtype != param dtype (so compute makes a copy anyway)

  @classmethod
  def of(cls, state: nnx.State, cfg: models.ModelConfig, ms: Mapping[str, int]) -> _Weights:
    whole_ms = dict(ms, data=1, fsdp=1)
    c = _itemsize(cfg.dtype)
    head_name = "embed_vd" if cfg.tie_word_embeddings else "lm_head_dv"
    stored = layer = head = head_param = 0
    sharded = False
    for path, var in nnx.to_flat_state(state):
      names = var.get_metadata()["logical_axes"]
      shape, dtype = var.get_value().shape, var.get_value().dtype
      mine, whole = per_device(shape, names, ms), per_device(shape, names, whole_ms)
      stored += mine * dtype.itemsize
      sharded |= mine < whole
      if "layers" in names:
        layer += whole // shape[names.index("layers")] * c
      elif cfg.head == "lm" and path[-1] == head_name:
        head, head_param = whole * c, whole * 4
    return cls(stored=stored, layer_gathered=layer, head_gathered=head,
               head_grad=head_param, sharded=sharded, cast=cfg.dtype != cfg.param_dtype)

  def in_use(self, stream_bytes: int) -> int:
    """Copies compute makes of the weights in use: one layer (twice, to overlap the next layer's
    all-gather) and the head, when the weights are cast or all-gathered. A heuristic from the
    XLA:CPU dumps: sharded weights counted as gathered only when a layer's input (`stream_bytes`
    a device) outweighs one layer of them; with less activation than weight the partitioner can
    move activations instead, and the estimates matched better without the copies."""
    gathers = self.sharded and stream_bytes >= self.layer_gathered
    return 2 * self.layer_gathered + self.head_gathered if gathers or (self.cast and not self.sharded) else 0


@functools.lru_cache(maxsize=32)
def _weights(cfg: models.ModelConfig, mesh_items: tuple[tuple[str, int], ...]) -> _Weights:
  _, state = models.loading.abstract(cfg)  # what build.abstract_models does, one model at a time
  return _Weights.of(state, cfg, dict(mesh_items))


# --- The rollout engine (continuous batching, `rollout.max_num_seqs`). ---

def slot_rollout(act: _Dims, ms: Mapping[str, int], slots: int, p: int, r: int, chunk: int,
                 cache_bytes: int) -> tuple[int, int]:
  """(KV cache, prefill activations) a device of the rollout over `slots` decode slots
  (`grlo_jax/rollout.py`): the slot cache [L, S, ...] of P + R slots a row, plus, during a
  refill, the [G]-row prefill cache of P (rounded up to the chunk) slots and one layer's
  activations on [G, chunk] queries over it (G = `rollout.refill_rows(S)` prompts a refill, a
  device's share when data x fsdp divides G, else all of them on every device). The drain's first
  compaction gathers the live slots into a cache of S/2 while the old one is still read: half a
  cache more, counted with the prefill's share (the larger of the two)."""
  from grlo_jax import rollout  # the engine's own group size

  rows = lambda n: per_device((n,), ("batch",), ms)
  g = rows(rollout.refill_rows(slots))
  p_chunked = -(-p // chunk) * chunk
  per_slot = 2 * act.cfg.num_layers * act.k * act.h * cache_bytes
  kv_cache = rows(slots) * ((p + r) * (per_slot + 1))
  prefill = g * p_chunked * (per_slot + 1) + act.forward_layer(g, chunk, p_chunked) + 2 * act.stream(g, chunk)
  compaction = rows(slots // 2) * (p + r) * (per_slot + 1)
  return kv_cache, max(prefill, compaction)


# --- The estimate. ---

def estimate(config: ml_collections.ConfigDict, mesh: Mesh | Mapping[str, int], *,
             micro_batch_size: int | None = None, remat: bool | None = None,
             unroll_decode: bool = False, backend: str | None = None) -> Plan:
  """Per-device memory of `config`'s step on `mesh` (a Mesh or {"data", "fsdp", "tensor"} sizes).

  `micro_batch_size` and `remat` override `actor.micro_batch_size` and `model.remat`.
  `unroll_decode`: the sampler's per-layer decode (XLA:CPU's default, `SamplingParams`) keeps
  every layer's weights as separate (gathered) buffers during the rollout.
  `backend` ("cpu", "gpu", "tpu"; default: this process's) decides what `model.attention=auto`
  runs, and so whether the attention keeps [N, S] scores per token (dense) or not (fused).
  """
  backend = backend or jax.default_backend()
  ms = _mesh_shape(mesh)
  c = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  if micro_batch_size is not None:
    c.actor.micro_batch_size = micro_batch_size
  if remat is not None:
    c.model.remat = remat
  rl = build.rl_config(c)  # raises when the batch does not split as configured
  archs = build.arch_configs(c)
  weights = {role: _weights(cfg, tuple(ms.items())) for role, cfg in archs.items() if cfg is not None}
  dims = {role: _Dims.of(archs[role], ms, backend) for role in weights}
  trainable = [r for r in ("actor", "critic") if r in weights]

  rows = lambda n: per_device((n,), ("batch",), ms)
  b, p, r = c.data.train_batch_size * rl.n, c.data.max_prompt_length, rl.sampling.max_new_tokens
  t = s = p + r  # T: the forward passes' length; S: the KV cache's slots
  t_rm = c.reward.rm_max_length if c.reward.retokenize else t + RM_EXTRA_TOKENS
  bd, md = rows(b), rows(rl.micro_batch_size)
  act, cache_bytes = dims["actor"], _itemsize(rl.sampling.cache_dtype)

  params = {role: w.stored for role, w in weights.items()}
  optimizer = 2 * sum(weights[role].stored for role in trainable)  # AdamW mu, nu in the param dtype
  inputs = bd * (2 * p * 4 + 2 * 4)  # input ids, attention mask [B, P] int32; index, style [B]

  # Rollout: KV cache (keys [L, B, K, H, S], values [L, B, K, S, H]), its mask [B, S]; the
  # prefill's one layer over [B, P] queries x S slots (+ its residual stream), and the sampled
  # tokens / log-probs [B, R].
  kv_cache = 2 * act.cfg.num_layers * bd * s * act.k * act.h * cache_bytes + bd * s
  act_prefill = act.forward_layer(bd, p, s) + 2 * act.stream(bd, p)
  stream_rows = bd
  if rl.sampling.max_num_seqs and rl.sampling.max_num_seqs < b:  # the rollout engine: by slots
    kv_cache, act_prefill = slot_rollout(act, ms, rl.sampling.max_num_seqs, p, r, rl.sampling.prefill_chunk,
                                         cache_bytes)
    stream_rows = rows(rl.sampling.max_num_seqs)
  wa = weights["actor"]
  if unroll_decode:  # every layer's weights as separate (gathered) buffers; the head copied too
    in_use = act.cfg.num_layers * wa.layer_gathered + (3 if wa.sharded else 2) * wa.head_gathered
  else:
    in_use = wa.in_use(act.stream(stream_rows, p))
  sampled = bd * r * (4 + 4 + 1)

  # What the step keeps from the rollout on: sequences [B, T] int32 + mask, responses [B, R]
  # int32 + masks, log-probs / values / rewards / advantages / returns [B, R] float32; the
  # mini-batch split copies the update's share of them once more.
  n_f32 = 5 + (1 if rl.uses_ref else 0) + (1 if rl.uses_critic else 0)
  per_row = t * 5 + r * (4 + 1 + 4 * n_f32)
  rollout_buffers = 2 * bd * per_row

  # Forward passes (old / ref log-probs, values), micro-batch by micro-batch, one at a time.
  def forward(role: str) -> int:
    dm = dims[role]
    logits = LOGITS_FWD * md * r * dm.v * 4 if dm.cfg.head == "lm" else md * t * 4
    layer = dm.forward_layer(md, t, t) + 2 * dm.stream(md, t)
    return max(layer, logits + dm.stream(md, t)) + weights[role].in_use(dm.stream(md, t))

  fwd_roles = ["actor"] + (["critic"] if rl.uses_critic else []) + (["ref"] if rl.uses_ref else [])
  act_forward = max(forward(role) for role in fwd_roles)

  # Reward model, micro-batch by micro-batch [b, T_rm] (+ its input ids and mask, int32).
  act_reward = 0
  if "rm" in weights:
    rm = dims["rm"]
    act_reward = (rm.forward_layer(md, t_rm, t_rm) + 2 * rm.stream(md, t_rm) + 2 * md * t_rm * 4
                  + weights["rm"].in_use(rm.stream(md, t_rm)))

  # Update: residuals of a micro-batch for every layer (remat: each layer's input) + the layer in
  # flight; the logits buffers of the actor; gradients: the micro-batch's and the accumulator's.
  def backward(role: str, with_remat: bool) -> int:
    dm = dims[role]
    kept, layer = dm.layers_backward(md, t, with_remat)
    logits = LOGITS_BWD * md * r * dm.v * 4 if dm.cfg.head == "lm" else 0
    return int(kept + max(layer, logits))

  # XLA interleaved the actor's and the critic's updates (both live) on one device and when the
  # micro-batch splits over the devices; with a replicated micro-batch (m not a multiple of
  # data x fsdp) it ran them one after the other in every dump we read.
  replicated = md == rl.micro_batch_size and rows(b) < b
  both = max if replicated else sum
  act_backward_remat = both(backward(role, True) for role in trainable)
  act_backward_no_remat = both(backward(role, False) for role in trainable)
  logits = LOGITS_BWD * md * r * act.v * 4
  # One micro-batch per mini-batch: the scan of one step keeps no separate accumulator.
  k = rl.ppo_mini_batch_size * rl.n // rl.micro_batch_size
  gradients = sum((1 if k == 1 else 2) * weights[role].stored for role in trainable)

  def gathered_for_update(role: str) -> int:
    w, stream = weights[role], dims[role].stream(md, t)
    return w.in_use(stream) + (w.head_grad if w.in_use(stream) and w.sharded else 0)

  gathered = sum(gathered_for_update(role) for role in trainable)
  act_backward = act_backward_remat if c.model.remat else act_backward_no_remat

  args = sum(params.values()) + optimizer + inputs
  slack = lambda x: int(HEAP_SLACK * x)
  phases = {
      "rollout": args + slack(kv_cache + act_prefill + in_use + sampled),
      "forward": args + slack(rollout_buffers + act_forward),
      "reward": args + slack(rollout_buffers + act_reward) if act_reward else 0,
      "update": args + slack(rollout_buffers + act_backward + gradients + gathered),
      "optimizer": args + slack(rollout_buffers + (1 + OPT_TEMPS) * sum(params[x] for x in trainable)),
  }
  phases = {k: v for k, v in phases.items() if v}
  return Plan(mesh=ms, micro_batch_size=rl.micro_batch_size, rows_per_device=md, remat=bool(c.model.remat),
              params=params, optimizer=optimizer, inputs=inputs, kv_cache=kv_cache,
              rollout_buffers=rollout_buffers, act_prefill=act_prefill, act_forward=act_forward,
              act_reward=act_reward, act_backward_remat=act_backward_remat,
              act_backward_no_remat=act_backward_no_remat, logits=logits, gradients=gradients,
              gathered=gathered, phases=phases)


def model_backward(cfg: models.ModelConfig, rows: int, t: int, *, backend: str | None = None,
                   mesh: Mapping[str, int] | None = None) -> int:
  """Bytes of the decoder's forward + backward on [rows, t] tokens a device (no head, no weight
  gradients): what the update phase counts for one model's layers (remat per `cfg.remat`)."""
  dims = _Dims.of(cfg, _mesh_shape(mesh or {}), backend or jax.default_backend())
  kept, layer = dims.layers_backward(rows, t, cfg.remat)
  return int(HEAP_SLACK * (kept + layer))


def suggest_micro_batch(config: ml_collections.ConfigDict, mesh: Mesh | Mapping[str, int],
                        hbm_bytes: float, *, margin: float = 0.9, unroll_decode: bool = False,
                        backend: str | None = None) -> int:
  """The largest `actor.micro_batch_size` that divides a mini-batch (ppo_mini_batch_size x rollout.n
  responses) and whose estimate fits in `margin x hbm_bytes`; 0 when none does (the rollout or the
  reward phase, which micro-batches do not shrink, is then too large by itself)."""
  mini = config.actor.ppo_mini_batch_size * config.rollout.n
  for m in sorted((d for d in range(1, mini + 1) if mini % d == 0), reverse=True):
    if estimate(config, mesh, micro_batch_size=m, unroll_decode=unroll_decode,
                backend=backend).fits(hbm_bytes, margin):
      return m
  return 0


def format_table(p: Plan, hbm_bytes: float | None = None, margin: float = 0.9) -> str:
  """The plan as a fixed-width table a device (GiB, or MiB below 1 GiB): components, then phases."""
  unit, size = ("GiB", GiB) if p.total >= GiB else ("MiB", 2**20)
  mesh = " x ".join(f"{a}={n}" for a, n in p.mesh.items())
  head = lambda title: f"{title:<36}{unit + '/device':>12}"
  lines = [(f"mesh {mesh}; micro-batch {p.micro_batch_size} responses ({p.rows_per_device} a device), "
            f"remat {'on' if p.remat else 'off'}"), "", head("component")]
  rows = [(f"params: {role}", b) for role, b in p.params.items()]
  rows += [("optimizer state (AdamW mu, nu)", p.optimizer), ("prompt batch", p.inputs),
           ("KV cache", p.kv_cache), ("rollout buffers", p.rollout_buffers),
           ("activations: prefill (1 layer)", p.act_prefill),
           ("activations: forward micro-batch", p.act_forward),
           ("activations: reward model (micro-batch)", p.act_reward),
           ("activations: update, remat", p.act_backward_remat),
           ("activations: update, no remat", p.act_backward_no_remat),
           ("logits [m, R, V] f32 (update)", p.logits), ("gradients + accumulators", p.gradients),
           ("all-gathered weights (update)", p.gathered)]
  lines += [f"{name:<36}{b / size:12.2f}" for name, b in rows]
  lines += ["", head("phase (arguments + temporaries)")]
  lines += [f"{name + (' <- peak' if name == p.peak_phase else ''):<36}{b / size:12.2f}"
            for name, b in p.phases.items()]
  if hbm_bytes is not None:
    verdict = "fits" if p.fits(hbm_bytes, margin) else "does NOT fit"
    lines += ["", (f"peak {p.total / GiB:.2f} GiB of {hbm_bytes / GiB:.1f} GiB a device "
                   f"({margin:.0%} usable): {verdict}")]
  return "\n".join(lines)


# --- Packed passes (`actor.use_dynamic_bsz`): the token budget a device, instead of rows. ---

# Keys a query block holds scores for at once in the packed passes: splash's and the chunked
# path's key block (`chunked_attention.DEFAULT_BLOCK`); packed rows need one of them, since the
# dense path's [N, L, L] scores grow with the square of the budget.


def estimate_packed(config: ml_collections.ConfigDict, mesh: Mesh | Mapping[str, int], *,
                    token_budget: int | None = None, remat: bool | None = None,
                    unroll_decode: bool = False, backend: str | None = None) -> Plan:
  """`estimate` for the packed step: every scoring and update pass runs one row of `token_budget`
  (default `actor.ppo_max_token_len_per_device`) tokens a device at a time, so its activations
  follow the budget, not the micro-batch's rows x (P + R). The policy's head runs HEAD_CHUNK
  positions at a time (`rl.chunked_head`, whose backward recomputes each chunk's logits).
  The rollout and the optimizer phases are `estimate`'s; `micro_batch_size` / `rows_per_device`
  of the result read 1 row a device."""
  from grlo_jax.rl import packed  # lazy: plan's import stays light

  backend = backend or jax.default_backend()
  base = estimate(config, mesh, remat=remat, unroll_decode=unroll_decode, backend=backend)
  ms = base.mesh
  c = ml_collections.ConfigDict(config.to_dict())
  if remat is not None:
    c.model.remat = remat
  rl = build.rl_config(c)
  budget = token_budget or c.actor.ppo_max_token_len_per_device
  archs = build.arch_configs(c)
  weights = {role: _weights(cfg, tuple(ms.items())) for role, cfg in archs.items() if cfg is not None}
  dims = {role: _Dims.of(archs[role], ms, backend) for role in weights}
  trainable = [r for r in ("actor", "critic") if r in weights]
  p, r = c.data.max_prompt_length, rl.sampling.max_new_tokens
  t_rm = budget + ((c.reward.rm_max_length - p - r) if c.reward.retokenize else RM_EXTRA_TOKENS)
  chunk = min(packed.HEAD_CHUNK, budget)
  devices = per_device((c.data.train_batch_size * rl.n,), ("batch",), ms)  # responses a device
  packed_rows = devices * budget * 4 * 4  # ids, segment ids, positions, head flags [.., L] int32

  def forward(role: str) -> int:
    dm = dims[role]
    head = LOGITS_FWD * chunk * dm.v * 4 if dm.cfg.head == "lm" else budget * 4
    layer = dm.forward_layer(1, budget, budget) + 2 * dm.stream(1, budget)
    return max(layer, head + dm.stream(1, budget)) + weights[role].in_use(dm.stream(1, budget))

  fwd_roles = ["actor"] + (["critic"] if rl.uses_critic else []) + (["ref"] if rl.uses_ref else [])
  act_forward = max(forward(role) for role in fwd_roles)
  act_reward = 0
  if "rm" in weights:
    rm = dims["rm"]
    act_reward = (rm.forward_layer(1, t_rm, t_rm) + 2 * rm.stream(1, t_rm) + 2 * t_rm * 4
                  + weights["rm"].in_use(rm.stream(1, t_rm)))

  def backward(role: str, with_remat: bool) -> int:
    dm = dims[role]
    kept, layer = dm.layers_backward(1, budget, with_remat)
    head = LOGITS_BWD * chunk * dm.v * 4 + budget * dm.d * dm.c if dm.cfg.head == "lm" else 0
    return int(kept + max(layer, head))

  # The actor's and the critic's packed updates are two scans over rows, one after the other: only
  # one row's activations are live at a time, so the larger of the two counts (XLA:CPU compiles of
  # the GAE step, tests/test_plan.py; the sum was 2x the compiled update).
  act_backward_remat = max(backward(role, True) for role in trainable)
  act_backward_no_remat = max(backward(role, False) for role in trainable)
  act_backward = act_backward_remat if c.model.remat else act_backward_no_remat
  gathered = sum(weights[role].in_use(dims[role].stream(1, budget)) for role in trainable)
  gradients = sum(2 * weights[role].stored for role in trainable)
  buffers = base.rollout_buffers + packed_rows
  slack = lambda x: int(HEAP_SLACK * x)
  args = base.arguments
  phases = dict(base.phases)
  phases |= {"forward": args + slack(buffers + act_forward),
             "update": args + slack(buffers + act_backward + gradients + gathered)}
  if act_reward:
    phases["reward"] = args + slack(buffers + act_reward)
  return dataclasses.replace(base, micro_batch_size=1, rows_per_device=1, rollout_buffers=buffers,
                             act_forward=act_forward, act_reward=act_reward,
                             act_backward_remat=act_backward_remat, act_backward_no_remat=act_backward_no_remat,
                             logits=LOGITS_BWD * chunk * dims["actor"].v * 4, gradients=gradients,
                             gathered=gathered, phases=phases)
