"""The one jitted RL step: sample, score, advantages, PPO/GRPO updates -> new state, metrics.

  step = jit_train_step(make_train_step(cfg, defs, txs, reward_fn), mesh, state, batch)
  state, metrics = step(state, batch, rng)

Inside one jit: repeat each prompt `n` times, sample responses with the policy's KV cache, compute
old / reference log-probs and critic values on [B, P + R], score with `reward_fn`, place the score
at the last response token (minus beta x KL when in-reward), compute advantages, then run
`ppo_epochs` x mini-batches of updates, each accumulating micro-batch gradients with `lax.scan`.
With `use_dynamic_bsz` every scoring and update pass runs on packed rows of real tokens instead
(`rl.packed`); the losses and advantages are the same [B, R] functions.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from grlo_jax import rollout, sharding
from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl import losses
from grlo_jax.rl import packed
from grlo_jax.rewards.shaping import token_level_rewards
from grlo_jax.rl.state import TrainState
from grlo_jax.sampling import SampleOutput, SamplingParams


# The step's `jax.named_scope`s, in order: XLA keeps them in each instruction's op_name, so a
# profile attributes time by phase (benchmarks/phases.py).
PHASES = ("rollout", "pack", "old_log_prob", "ref_log_prob", "values", "reward", "actor_update",
          "critic_update")


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """Static knobs of the step (verl names)."""

  sampling: SamplingParams
  n: int = 1  # responses per prompt (rollout.n)
  adv_estimator: str = "gae"  # gae | grpo | rloo | reinforce_plus_plus
  gamma: float = 1.0
  lam: float = 1.0
  norm_adv_by_std_in_grpo: bool = True
  ppo_epochs: int = 1
  ppo_mini_batch_size: int = 1  # prompts per mini-batch (x n responses), as verl
  micro_batch_size: int = 1  # responses per micro-batch (gradient accumulation unit)
  clip_ratio_low: float = 0.2
  clip_ratio_high: float = 0.2
  clip_ratio_c: float = 3.0
  loss_agg_mode: str = "token-mean"
  entropy_coeff: float = 0.0
  use_kl_loss: bool = False
  kl_loss_coef: float = 0.001
  kl_loss_type: str = "low_var_kl"
  use_kl_in_reward: bool = False
  kl_penalty: str = "kl"
  kl_coef: float = 0.001
  cliprange_value: float = 0.5
  # One update a step (1 epoch, 1 mini-batch) is on-policy: the old log-probs are then the update's
  # own, stop-gradient. True runs their separate forward anyway (as verl always does).
  recompute_old_log_prob: bool = False
  # Sequence packing (verl's use_dynamic_bsz + use_remove_padding): every scoring and update pass
  # runs on rows of ppo_max_token_len_per_device real tokens (prompt + response, several
  # sequences a row), one row per device a micro-batch, rows without tokens skipped.
  # micro_batch_size is then unused.
  use_dynamic_bsz: bool = False
  ppo_max_token_len_per_device: int = 0
  num_logged_samples: int = 0  # rollouts returned in metrics["rollout/..."] for the host to log

  @property
  def uses_critic(self) -> bool:
    return self.adv_estimator == "gae"

  @property
  def uses_ref(self) -> bool:
    return self.use_kl_loss or self.use_kl_in_reward

  def reuses_update_log_probs(self, responses_per_step: int) -> bool:
    """True when a step makes one update (1 epoch, 1 mini-batch): the policy is then still the
    rollout's at the update, so the old log-probs are the update's own (stop-gradient) and need no
    forward of their own (ratio 1 either way). The in-reward KL needs them before the advantages."""
    one_mini = responses_per_step == self.ppo_mini_batch_size * self.n
    return (self.ppo_epochs == 1 and one_mini and not self.use_kl_in_reward
            and not self.recompute_old_log_prob)

  def check(self, prompts_per_step: int) -> None:
    """Raise, naming the knob, when the batch does not split as configured."""
    mini = self.ppo_mini_batch_size * self.n
    if prompts_per_step % self.ppo_mini_batch_size:
      raise ValueError(f"actor.ppo_mini_batch_size={self.ppo_mini_batch_size} does not divide "
                       f"data.train_batch_size={prompts_per_step}")
    if mini % self.micro_batch_size:
      raise ValueError(f"actor.micro_batch_size={self.micro_batch_size} does not divide a mini-batch of "
                       f"{mini} responses (ppo_mini_batch_size x rollout.n)")
    if self.use_dynamic_bsz and self.ppo_max_token_len_per_device <= 0:
      raise ValueError("actor.use_dynamic_bsz=True needs actor.ppo_max_token_len_per_device > 0, got "
                       f"{self.ppo_max_token_len_per_device}")
    if self.adv_estimator not in adv_lib.ADV_ESTIMATORS:
      raise ValueError(f"algorithm.adv_estimator={self.adv_estimator!r}; known: {sorted(adv_lib.ADV_ESTIMATORS)}")
    if self.adv_estimator in ("grpo", "rloo") and self.n < 2:
      raise ValueError(f"algorithm.adv_estimator={self.adv_estimator!r} needs rollout.n >= 2, got {self.n}")


@dataclasses.dataclass(frozen=True)
class GraphDefs:
  actor: nnx.GraphDef
  critic: nnx.GraphDef | None = None
  rm: nnx.GraphDef | None = None


@dataclasses.dataclass(frozen=True)
class Optimizers:
  actor: optax.GradientTransformation
  critic: optax.GradientTransformation | None = None


# reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, rollout) -> score_b float32, where
# batch_rep is the prompt batch repeated n times (see rewards.score.make_reward_fn). One that takes a
# keyword `rm_forward` gets the packed reward-model forward when the step packs.
RewardFn = Callable[[TrainState, dict, jax.Array, jax.Array, SampleOutput], jax.Array]


def _response_logits(graphdef, params, seq_bt, mask_bt, prompt_len: int, temperature: float) -> jax.Array:
  """[b, R, V] float32 logits that predict each response token (positions P-1 .. P+R-2)."""
  model = nnx.merge(graphdef, params)
  x_btd, _ = model.hidden(seq_bt, mask_bt)
  logits = model.head(x_btd[:, prompt_len - 1:-1])
  return logits / temperature if temperature > 0 else logits


def _response_values(graphdef, params, seq_bt, mask_bt, prompt_len: int) -> jax.Array:
  model = nnx.merge(graphdef, params)
  return model(seq_bt, attention_mask=mask_bt)[:, prompt_len - 1:-1]


def _split(x: jax.Array, *groups: int) -> jax.Array:
  """[B, ...] -> [*groups, B / prod(groups), ...], each group strided over the batch so every
  piece keeps rows from every data shard (no resharding of the batch axis)."""
  rows = x.shape[0]
  per = rows // math.prod(groups)
  y = x.reshape(per, *groups, *x.shape[1:])
  y = jnp.moveaxis(y, 0, len(groups))
  return sharding.constrain(y, (None,) * len(groups) + ("batch",) + (None,) * (x.ndim - 1))


def _split_minis(x: jax.Array, n_mini: int, k: int) -> jax.Array:
  """[B, ...] -> [n_mini, k, B / (n_mini k), ...]: mini-batch g holds the rows with index % n_mini
  == g whatever k (the packed path's `packed.split_shards` takes the same rows), then k strided
  micro-batches of it."""
  per = x.shape[0] // (n_mini * k)
  y = jnp.moveaxis(x.reshape(per, k, n_mini, *x.shape[1:]), (2, 1), (0, 1))
  return sharding.constrain(y, (None, None, "batch") + (None,) * (x.ndim - 1))


def _accepts_rm_forward(reward_fn) -> bool:
  try:
    return "rm_forward" in inspect.signature(reward_fn).parameters
  except (TypeError, ValueError):
    return False


def _merge(y: jax.Array, ngroups: int) -> jax.Array:
  """Inverse of `_split`."""
  y = jnp.moveaxis(y, ngroups, 0)
  return y.reshape(-1, *y.shape[1 + ngroups:])


def _map_micro(fn, k: int, *xs):
  """fn over k strided micro-batches of the batch (bounds activation memory), results re-joined.
  Each of `xs` is a pytree of batch-major arrays."""
  out = jax.lax.map(lambda args: fn(*args), jax.tree.map(lambda x: _split(x, k), xs))
  return jax.tree.map(lambda y: _merge(y, 1), out)


def make_train_step(cfg: RLConfig, defs: GraphDefs, txs: Optimizers, reward_fn: RewardFn):
  """The pure step `(state, batch, rng) -> (state, metrics)`; see `jit_train_step`."""
  temp = cfg.sampling.temperature if cfg.sampling.temperature > 0 else 1.0
  estimator = adv_lib.get_adv_estimator_fn(cfg.adv_estimator)
  pack = cfg.use_dynamic_bsz
  packed_rm = pack and _accepts_rm_forward(reward_fn)

  def step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(rng, state.step)
    batch_rep = {k: jnp.repeat(v, cfg.n, axis=0) for k, v in batch.items()}
    prompt_ids_bp = batch_rep["input_ids_bp"]
    prompt_mask_bp = batch_rep["attention_mask_bp"].astype(bool)
    b, p = prompt_ids_bp.shape
    group_b = jnp.repeat(jnp.arange(b // cfg.n, dtype=jnp.int32), cfg.n)

    # Rollout: over rollout.max_num_seqs slots (continuous batching), or all rows at once.
    with jax.named_scope("rollout"):
      roll, roll_stats = rollout.generate(nnx.merge(defs.actor, state.actor), prompt_ids_bp, prompt_mask_bp, rng,
                                          cfg.sampling)
    resp_br, mask_br = roll.tokens, roll.mask
    r = resp_br.shape[1]
    seq_bt = jnp.concatenate([prompt_ids_bp, resp_br], axis=1)
    seq_mask_bt = jnp.concatenate([prompt_mask_bp, mask_br], axis=1)
    maskf_br = mask_br.astype(jnp.float32)
    n_micro = b // cfg.micro_batch_size

    n_mini = b // (cfg.ppo_mini_batch_size * cfg.n)
    one_update = cfg.reuses_update_log_probs(b)

    metrics = roll_stats.metrics()
    if pack:  # every sequence's real tokens in rows of the token budget, each device its own
      with jax.named_scope("pack"):
        row_len = cfg.ppo_max_token_len_per_device
        if row_len < p + r:
          raise ValueError(f"actor.ppo_max_token_len_per_device={row_len} is shorter than the longest "
                           f"sequence: the batch's prompt length {p} + rollout.response_length {r}")
        shards = packed.data_shards(b // n_mini)
        rows = packed.pack_rows(seq_bt, seq_mask_bt, n_mini, shards, row_len,
                                packed.response_head_mask(prompt_mask_bp, mask_br))
        resp_off_gdsr = packed.response_offsets(prompt_mask_bp, r, n_mini, shards)
        metrics["perf/packed_rows"] = packed.executed_rows(rows)
        metrics["perf/packed_head_positions"] = packed.executed_head_positions(rows)

    # Old (and reference) log-probs, values: one forward each, micro-batch by micro-batch.
    def logp_of(graphdef, params):
      if pack:
        row = lambda ids, seg, pos, head: packed.policy_outputs(graphdef, params, ids, seg, pos, head, temp)[0]
        return jax.lax.stop_gradient(packed.gather_sequences(packed.map_rows(row, rows), rows, resp_off_gdsr))

      def one(seq, m, resp):
        return losses.logprobs_from_logits(_response_logits(graphdef, params, seq, m, p, temp), resp)
      return jax.lax.stop_gradient(_map_micro(one, n_micro, seq_bt, seq_mask_bt, resp_br))

    with jax.named_scope("old_log_prob"):
      old_logp_br = None if one_update else logp_of(defs.actor, state.actor)
    with jax.named_scope("ref_log_prob"):
      ref_logp_br = logp_of(defs.actor, state.ref) if cfg.uses_ref else None
    with jax.named_scope("values"):
      values_br = None
      if cfg.uses_critic and pack:
        values_br = jax.lax.stop_gradient(packed.gather_sequences(packed.map_rows(
            lambda ids, seg, pos, _: packed.values(defs.critic, state.critic, ids, seg, pos), rows), rows,
            resp_off_gdsr))
      elif cfg.uses_critic:
        values_br = jax.lax.stop_gradient(_map_micro(
            lambda seq, m: _response_values(defs.critic, state.critic, seq, m, p), n_micro, seq_bt, seq_mask_bt))

    # Rewards (the RM forward micro-batch by micro-batch too, or on packed rows) and advantages.
    with jax.named_scope("reward"):
      if packed_rm:
        rm_rows = []  # the packed RM forward's computed rows, for the FLOP count

        def rm_forward(rm_model, ids_bt, mask_bt):
          # Rows hold any one RM input: the budget plus what the RM input adds to prompt + response.
          score_b, used = packed.rm_scores(rm_model, ids_bt, mask_bt, row_len + ids_bt.shape[1] - (p + r))
          rm_rows.append(used)
          return score_b

        score_b = reward_fn(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll,
                            rm_forward=rm_forward).astype(jnp.float32)
        if rm_rows:
          metrics["perf/packed_rm_rows"] = rm_rows[0]
      else:
        score_b = _map_micro(lambda rep, ro: reward_fn(state, rep, rep["input_ids_bp"],
                                                       rep["attention_mask_bp"].astype(bool), ro),
                             n_micro, batch_rep, roll).astype(jnp.float32)
    rewards_br = token_level_rewards(score_b, mask_br)
    if cfg.use_kl_in_reward:
      kl_br = losses.kl_penalty(old_logp_br, ref_logp_br, cfg.kl_penalty) * maskf_br
      rewards_br = rewards_br - cfg.kl_coef * kl_br
      metrics["actor/reward_kl_penalty"] = adv_lib.masked_mean(kl_br, maskf_br)
    if cfg.adv_estimator == "gae":
      adv_br, ret_br = estimator(rewards_br, values_br, maskf_br, cfg.gamma, cfg.lam)
    elif cfg.adv_estimator == "grpo":
      adv_br, ret_br = estimator(rewards_br, maskf_br, group_b,
                                 norm_adv_by_std_in_grpo=cfg.norm_adv_by_std_in_grpo)
    elif cfg.adv_estimator == "rloo":
      adv_br, ret_br = estimator(rewards_br, maskf_br, group_b)
    else:
      adv_br, ret_br = estimator(rewards_br, maskf_br, cfg.gamma)

    # PPO updates: epochs x mini-batches, micro-batch gradients summed (losses carry global denominators).
    k = cfg.ppo_mini_batch_size * cfg.n // cfg.micro_batch_size
    data = {"mask": maskf_br, "adv": adv_br}
    if not pack:
      data |= {"seq": seq_bt, "seq_mask": seq_mask_bt, "resp": resp_br}
    if old_logp_br is not None:
      data["old_logp"] = old_logp_br
    if ref_logp_br is not None and cfg.use_kl_loss:
      data["ref_logp"] = ref_logp_br
    if cfg.uses_critic:
      data |= {"values": values_br, "returns": ret_br}
    if pack:
      # Mini-batch g: its sequences [d * s, R] (device-major, as packed) and its packed rows.
      minis = jax.tree.map(lambda x: sharding.constrain(
          packed.split_shards(x, n_mini, shards).reshape(n_mini, -1, *x.shape[1:]),
          (None, "batch") + (None,) * (x.ndim - 1)), data)
      minis |= {"rows": rows, "off": resp_off_gdsr}
    else:
      minis = jax.tree.map(lambda x: _split_minis(x, n_mini, k), data)

    def actor_forward(params, mb):
      """(log-probs, entropies, loss mask) [b, R] of the micro-batch's response tokens."""
      if not pack:
        logits = _response_logits(defs.actor, params, mb["seq"], mb["seq_mask"], p, temp)
        return (losses.logprobs_from_logits(logits, mb["resp"]), losses.entropy_from_logits(logits),
                mb["mask"])
      rws = mb["rows"]
      logp_dl, ent_dl = packed.policy_outputs(defs.actor, params, rws.ids, rws.seg, rws.pos, rws.head, temp,
                                              entropy=True)
      logp, in_row = packed.row_of(logp_dl, rws.layout, mb["r"], mb["off"])
      entropy, _ = packed.row_of(ent_dl, rws.layout, mb["r"], mb["off"])
      return logp, entropy, mb["mask"] * in_row  # the mini-batch's sequences that lie in row r

    def actor_loss(params, mb, info):
      logp, entropy_br, mask = actor_forward(params, mb)
      old_logp = mb["old_logp"] if "old_logp" in mb else jax.lax.stop_gradient(logp)
      pg_loss, clipfrac, ppo_kl, clipfrac_lower = losses.compute_policy_loss(
          old_logp, logp, mb["adv"], mask, cliprange_low=cfg.clip_ratio_low,
          cliprange_high=cfg.clip_ratio_high, clip_ratio_c=cfg.clip_ratio_c, loss_agg_mode=cfg.loss_agg_mode,
          **info)
      entropy = losses.agg_loss(entropy_br, mask, cfg.loss_agg_mode, **info)
      loss = pg_loss - cfg.entropy_coeff * entropy
      aux = {"actor/pg_loss": pg_loss, "actor/entropy": entropy}
      if cfg.use_kl_loss:
        kl = losses.agg_loss(losses.kl_penalty(logp, mb["ref_logp"], cfg.kl_loss_type), mask,
                             cfg.loss_agg_mode, **info)
        loss = loss + cfg.kl_loss_coef * kl
        aux["actor/kl_loss"] = kl
        if "old_logp" not in mb:  # the rollout policy's mean log-ratio to the reference
          aux["actor/kl_to_ref"] = losses.agg_loss(logp - mb["ref_logp"], mask, "token-mean", **info)
      # Ratio metrics are per micro-batch means: weight them by the micro-batch's token share.
      share = mask.sum() / info["batch_num_tokens"]
      aux |= {"actor/pg_clipfrac": clipfrac * share, "actor/ppo_kl": ppo_kl * share,
              "actor/pg_clipfrac_lower": clipfrac_lower * share}
      return loss, aux

    def critic_loss(params, mb, info):
      if pack:
        rws = mb["rows"]
        vpreds, in_row = packed.row_of(packed.values(defs.critic, params, rws.ids, rws.seg, rws.pos),
                                       rws.layout, mb["r"], mb["off"])
        mask = mb["mask"] * in_row
      else:
        vpreds, mask = _response_values(defs.critic, params, mb["seq"], mb["seq_mask"], p), mb["mask"]
      vf_loss, vf_clipfrac = losses.compute_value_loss(vpreds, mb["returns"], mb["values"], mask,
                                                       cfg.cliprange_value, cfg.loss_agg_mode, **info)
      share = mask.sum() / info["batch_num_tokens"]
      return vf_loss, {"critic/vf_loss": vf_loss, "critic/vf_clipfrac": vf_clipfrac * share,
                       "critic/vpred_mean": adv_lib.masked_mean(vpreds, mask) * share}

    def packed_micro(mini, r):
      """Micro-batch r of a packed mini-batch: each device's row r, the mini-batch's sequences."""
      rws = mini["rows"]
      row = lambda x: x[:, r]
      return mini | {"rows": rws.replace(ids=row(rws.ids), seg=row(rws.seg), pos=row(rws.pos), head=row(rws.head)),
                     "r": r}

    def accumulate(loss_fn, params, mini, info):
      def micro(acc, mb):
        (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb, info)
        return jax.tree.map(jnp.add, acc, (g, aux)), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      first = packed_micro(mini, 0) if pack else jax.tree.map(lambda x: x[0], mini)
      aux0 = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: loss_fn(params, first, info)[1]))
      if not pack:
        (grads, aux), _ = jax.lax.scan(micro, (zeros, aux0), mini)
        return grads, aux

      used = mini["rows"].layout.used.max()  # the busiest device's rows: later ones hold no token

      def packed_step(acc, r):
        return jax.lax.cond(r < used, lambda: micro(acc, packed_micro(mini, r))[0], lambda: acc), None

      (grads, aux), _ = jax.lax.scan(packed_step, (zeros, aux0), jnp.arange(mini["rows"].ids.shape[1]))
      return grads, aux

    def apply(params, opt_state, tx, grads, loss):
      """One optimizer update, skipped (params and moments kept) when the loss or a gradient is
      not finite: one bad mini-batch must not poison the weights."""
      grad_norm = optax.global_norm(grads)
      ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      upd, new_opt = tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, upd)
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
      return keep(new_params, params), keep(new_opt, opt_state), grad_norm, 1.0 - ok.astype(jnp.float32)

    def update(st: TrainState, mini):
      info = losses.global_batch_info(mini["mask"])
      with jax.named_scope("actor_update"):
        grads, aux = accumulate(actor_loss, st.actor, mini, info)
      actor, actor_opt, aux["actor/grad_norm"], aux["actor/skipped_updates"] = apply(
          st.actor, st.actor_opt, txs.actor, grads, aux["actor/pg_loss"])
      st = st.replace(actor=actor, actor_opt=actor_opt)
      if cfg.uses_critic:
        with jax.named_scope("critic_update"):
          cgrads, caux = accumulate(critic_loss, st.critic, mini, info)
        critic, critic_opt, caux["critic/grad_norm"], caux["critic/skipped_updates"] = apply(
            st.critic, st.critic_opt, txs.critic, cgrads, caux["critic/vf_loss"])
        st = st.replace(critic=critic, critic_opt=critic_opt)
        aux |= caux
      return st, aux

    def epoch(st, _):
      return jax.lax.scan(update, st, minis)

    state, upd_metrics = jax.lax.scan(epoch, state, None, length=cfg.ppo_epochs)
    skipped = {k: upd_metrics.pop(k).sum() for k in list(upd_metrics) if k.endswith("skipped_updates")}
    metrics |= jax.tree.map(jnp.mean, upd_metrics) | skipped
    lengths_b = roll.lengths.astype(jnp.float32)
    metrics |= {
        "critic/score/mean": score_b.mean(), "critic/score/std": score_b.std(),
        "critic/score/max": score_b.max(), "critic/score/min": score_b.min(),
        "reward/mean": score_b.mean(), "reward/std": score_b.std(),
        "critic/rewards/mean": rewards_br.sum(-1).mean(),
        "critic/advantages/mean": adv_lib.masked_mean(adv_br, maskf_br),
        "critic/advantages/max": jnp.max(jnp.where(mask_br, adv_br, -jnp.inf)),
        "critic/advantages/min": jnp.min(jnp.where(mask_br, adv_br, jnp.inf)),
        "critic/returns/mean": adv_lib.masked_mean(ret_br, maskf_br),
        "response_length/mean": lengths_b.mean(), "response_length/max": lengths_b.max(),
        "response_length/min": lengths_b.min(),
        "response_length/clip_ratio": (roll.lengths >= r).astype(jnp.float32).mean(),
        "prompt_length/mean": prompt_mask_bp.sum(-1).astype(jnp.float32).mean(),
        "tokens/response": maskf_br.sum(), "tokens/total": seq_mask_bt.sum().astype(jnp.float32),
        # Each response's real lengths, for the FLOPs of the real tokens (`rl.flops.useful_step_flops`).
        "lengths/prompt_b": prompt_mask_bp.sum(-1, dtype=jnp.int32), "lengths/response_b": roll.lengths,
    }
    if cfg.uses_critic:
      metrics["critic/values/mean"] = adv_lib.masked_mean(values_br, maskf_br)
    if ref_logp_br is not None and old_logp_br is not None:
      metrics["actor/kl_to_ref"] = adv_lib.masked_mean(old_logp_br - ref_logp_br, maskf_br)
    if cfg.num_logged_samples:
      k = min(cfg.num_logged_samples, b)
      metrics |= {"rollout/index_b": batch_rep["index_b"][:k], "rollout/response_br": resp_br[:k],
                  "rollout/mask_br": mask_br[:k], "rollout/score_b": score_b[:k]}
    return state.replace(step=state.step + 1), metrics

  return step


def jit_train_step(step, mesh: Mesh | None, state: TrainState, batch: dict):
  """Jit `step` with explicit shardings for `mesh` (one device when None) and the state donated.

  `state` and `batch` may be abstract; they only give the trees' structure and shapes.
  """
  mesh = sharding.single_device_mesh() if mesh is None else mesh
  state_sh = sharding.tree_shardings(state, mesh)
  batch_sh = {k: sharding.batch_sharding(mesh, v.shape) for k, v in batch.items()}
  return jax.jit(step, in_shardings=(state_sh, batch_sh, sharding.replicated(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
