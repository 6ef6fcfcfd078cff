"""The updates phase: `ppo_epochs` x mini-batches of actor (and critic) updates on a layout.

Each mini-batch sums its micro-batches' gradients (`layout.accumulate`; the losses carry the
mini-batch's global denominators, so the sum is the mini-batch's gradient) and makes one optimizer
update, skipped when the loss or a gradient is not finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl import losses
from grlo_jax.rl.config import GraphDefs, Optimizers, RLConfig
from grlo_jax.rl.layout import Layout
from grlo_jax.rl.state import TrainState


def actor_loss_fn(cfg: RLConfig, defs: GraphDefs, layout: Layout, temperature: float):
  """`loss(params, micro, info) -> (loss, aux)`: PPO clip, minus the entropy bonus, plus the KL loss."""
  def actor_loss(params, mb, info):
    logp, entropy_br, mask = layout.update_log_probs(defs.actor, params, mb, temperature)
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
  return actor_loss


def critic_loss_fn(cfg: RLConfig, defs: GraphDefs, layout: Layout):
  """`loss(params, micro, info) -> (loss, aux)`: the clipped value loss."""
  def critic_loss(params, mb, info):
    vpreds, mask = layout.update_values(defs.critic, params, mb)
    vf_loss, vf_clipfrac = losses.compute_value_loss(vpreds, mb["returns"], mb["values"], mask,
                                                     cfg.cliprange_value, cfg.loss_agg_mode, **info)
    share = mask.sum() / info["batch_num_tokens"]
    return vf_loss, {"critic/vf_loss": vf_loss, "critic/vf_clipfrac": vf_clipfrac * share,
                     "critic/vpred_mean": adv_lib.masked_mean(vpreds, mask) * share}
  return critic_loss


def apply_update(params, opt_state, tx: optax.GradientTransformation, grads, loss):
  """One optimizer update, skipped (params and moments kept) when the loss or a gradient is not
  finite: one bad mini-batch must not poison the weights. -> (params, opt_state, grad norm,
  1.0 when skipped)."""
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  upd, new_opt = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, upd)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
  return keep(new_params, params), keep(new_opt, opt_state), grad_norm, 1.0 - ok.astype(jnp.float32)


def ppo_updates(cfg: RLConfig, defs: GraphDefs, txs: Optimizers, layout: Layout, state: TrainState,
                data_b: dict, temperature: float) -> tuple[TrainState, dict]:
  """`ppo_epochs` passes over the mini-batches of `data_b` (per-sequence [B, ...]: mask, adv and,
  as the config needs, old_logp, ref_logp, values, returns) -> (state, metrics averaged over the
  updates; skipped-update counts summed)."""
  minis = layout.minis(data_b)
  actor_loss = actor_loss_fn(cfg, defs, layout, temperature)
  critic_loss = critic_loss_fn(cfg, defs, layout)

  def update(st: TrainState, mini):
    info = losses.global_batch_info(mini["mask"])
    with jax.named_scope("actor_update"):
      grads, aux = layout.accumulate(actor_loss, st.actor, mini, info)
    actor, actor_opt, aux["actor/grad_norm"], aux["actor/skipped_updates"] = apply_update(
        st.actor, st.actor_opt, txs.actor, grads, aux["actor/pg_loss"])
    st = st.replace(actor=actor, actor_opt=actor_opt)
    if cfg.uses_critic:
      with jax.named_scope("critic_update"):
        cgrads, caux = layout.accumulate(critic_loss, st.critic, mini, info)
      critic, critic_opt, caux["critic/grad_norm"], caux["critic/skipped_updates"] = apply_update(
          st.critic, st.critic_opt, txs.critic, cgrads, caux["critic/vf_loss"])
      st = st.replace(critic=critic, critic_opt=critic_opt)
      aux |= caux
    return st, aux

  def epoch(st, _):
    return jax.lax.scan(update, st, minis)

  state, upd_metrics = jax.lax.scan(epoch, state, None, length=cfg.ppo_epochs)
  skipped = {k: upd_metrics.pop(k).sum() for k in list(upd_metrics) if k.endswith("skipped_updates")}
  return state, jax.tree.map(jnp.mean, upd_metrics) | skipped
