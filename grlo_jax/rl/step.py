"""The one jitted RL step, a composition of named phases -> new state, metrics.

  step = jit_train_step(make_train_step(cfg, defs, txs, reward_fn), mesh, state, batch)
  state, metrics = step(state, batch, rng)

  rollout    each prompt `n` times, sampled with the policy's KV cache (`rollout.generate`: the
             continuous-batching engine over `rollout.max_num_seqs` slots, or all rows at once)
  layout     where the sequences sit in rows (`rl.layout`: padded, or packed real tokens with
             `use_dynamic_bsz`), built once; every later phase runs its models through it
  scoring    old / reference log-probs and critic values (`rl.scoring.score_passes`)
  rewards    the reward function's score at each response's last token, KL in reward
             (`rl.scoring.token_rewards`)
  advantages the configured estimator (`rl.advantages.compute_advantage`)
  updates    `ppo_epochs` x mini-batches of actor and critic updates (`rl.update.ppo_updates`)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from grlo_jax import rollout, sharding
from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl.config import GraphDefs, Optimizers, RewardFn, RLConfig  # noqa: F401 (the step's public names)
from grlo_jax.rl.layout import Sequences, make_layout
from grlo_jax.rl.layout import split_minis as _split_minis  # noqa: F401 (tests compare layouts with it)
from grlo_jax.rl.scoring import score_passes, token_rewards
from grlo_jax.rl.state import TrainState
from grlo_jax.rl.update import ppo_updates

# The step's `jax.named_scope`s, in order: XLA keeps them in each instruction's op_name, so a
# profile attributes time by phase (benchmarks/phases.py).
PHASES = ("rollout", "pack", "old_log_prob", "ref_log_prob", "values", "reward", "actor_update",
          "critic_update")


def make_train_step(cfg: RLConfig, defs: GraphDefs, txs: Optimizers, reward_fn: RewardFn):
  """The pure step `(state, batch, rng) -> (state, metrics)`; see `jit_train_step`."""
  temp = cfg.sampling.temperature if cfg.sampling.temperature > 0 else 1.0

  def step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(rng, state.step)
    batch_rep = {k: jnp.repeat(v, cfg.n, axis=0) for k, v in batch.items()}
    prompt_ids_bp = batch_rep["input_ids_bp"]
    prompt_mask_bp = batch_rep["attention_mask_bp"].astype(bool)
    b = prompt_ids_bp.shape[0]

    with jax.named_scope("rollout"):
      roll, roll_stats = rollout.generate(nnx.merge(defs.actor, state.actor), prompt_ids_bp, prompt_mask_bp,
                                          rng, cfg.sampling)
    with jax.named_scope("pack"):
      layout = make_layout(Sequences(prompt_ids_bp, prompt_mask_bp, roll.tokens, roll.mask),
                           n_mini=b // (cfg.ppo_mini_batch_size * cfg.n), micro_batch_size=cfg.micro_batch_size,
                           mini_size=cfg.ppo_mini_batch_size * cfg.n, pack=cfg.use_dynamic_bsz,
                           row_len=cfg.ppo_max_token_len_per_device)

    old_logp_br, ref_logp_br, values_br = score_passes(cfg, defs, state, layout, temp,
                                                       one_update=cfg.reuses_update_log_probs(b))
    score_b, rewards_br, reward_metrics = token_rewards(cfg, layout, reward_fn, state, batch_rep, roll,
                                                        old_logp_br, ref_logp_br)
    maskf_br = roll.mask.astype(jnp.float32)
    group_b = jnp.repeat(jnp.arange(b // cfg.n, dtype=jnp.int32), cfg.n)
    adv_br, ret_br = adv_lib.compute_advantage(cfg.adv_estimator, rewards_br, values_br, maskf_br, group_b,
                                               gamma=cfg.gamma, lam=cfg.lam,
                                               norm_adv_by_std_in_grpo=cfg.norm_adv_by_std_in_grpo)

    data = {"mask": maskf_br, "adv": adv_br}
    if old_logp_br is not None:
      data["old_logp"] = old_logp_br
    if ref_logp_br is not None and cfg.use_kl_loss:
      data["ref_logp"] = ref_logp_br
    if cfg.uses_critic:
      data |= {"values": values_br, "returns": ret_br}
    state, update_metrics = ppo_updates(cfg, defs, txs, layout, state, data, temp)

    metrics = (roll_stats.metrics() | layout.metrics() | reward_metrics | update_metrics
               | step_metrics(cfg, roll, prompt_mask_bp, score_b, rewards_br, adv_br, ret_br, values_br,
                              old_logp_br, ref_logp_br))
    if cfg.num_logged_samples:
      k = min(cfg.num_logged_samples, b)
      metrics |= {"rollout/index_b": batch_rep["index_b"][:k], "rollout/response_br": roll.tokens[:k],
                  "rollout/mask_br": roll.mask[:k], "rollout/score_b": score_b[:k]}
    return state.replace(step=state.step + 1), metrics

  return step


def step_metrics(cfg: RLConfig, roll, prompt_mask_bp, score_b, rewards_br, adv_br, ret_br, values_br,
                 old_logp_br, ref_logp_br) -> dict[str, jax.Array]:
  """The step's data metrics (verl names): scores, rewards, advantages, returns, lengths."""
  mask_br = roll.mask
  maskf_br = mask_br.astype(jnp.float32)
  seq_mask_bt = jnp.concatenate([prompt_mask_bp, mask_br], axis=1)
  lengths_b = roll.lengths.astype(jnp.float32)
  metrics = {
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
      "response_length/clip_ratio": (roll.lengths >= mask_br.shape[1]).astype(jnp.float32).mean(),
      "prompt_length/mean": prompt_mask_bp.sum(-1).astype(jnp.float32).mean(),
      "tokens/response": maskf_br.sum(), "tokens/total": seq_mask_bt.sum().astype(jnp.float32),
      # Each response's real lengths, for the FLOPs of the real tokens (`rl.flops.useful_step_flops`).
      "lengths/prompt_b": prompt_mask_bp.sum(-1, dtype=jnp.int32), "lengths/response_b": roll.lengths,
  }
  if cfg.uses_critic:
    metrics["critic/values/mean"] = adv_lib.masked_mean(values_br, maskf_br)
    # verl's: how much of the returns' variance the rollout's values explain (1 = all).
    metrics["critic/vf_explained_var"] = 1.0 - adv_lib.masked_var(ret_br - values_br, maskf_br) / (
        adv_lib.masked_var(ret_br, maskf_br) + 1e-5)
  if ref_logp_br is not None and old_logp_br is not None:
    metrics["actor/kl_to_ref"] = adv_lib.masked_mean(old_logp_br - ref_logp_br, maskf_br)
  return metrics


def jit_train_step(step, mesh: Mesh | None, state: TrainState, batch: dict):
  """Jit `step` with explicit shardings for `mesh` (one device when None) and the state donated.

  `state` and `batch` may be abstract; they only give the trees' structure and shapes.
  """
  mesh = sharding.single_device_mesh() if mesh is None else mesh
  state_sh = sharding.tree_shardings(state, mesh)
  batch_sh = {k: sharding.batch_sharding(mesh, v.shape) for k, v in batch.items()}
  return jax.jit(step, in_shardings=(state_sh, batch_sh, sharding.replicated(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
