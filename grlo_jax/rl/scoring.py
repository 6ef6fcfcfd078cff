"""The scoring phases: old / reference log-probs and critic values, then the rewards, on a layout.

Every pass is a forward of a frozen copy of the weights (stop-gradient): they fix the update's
targets before the first optimizer step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grlo_jax.rewards.shaping import token_level_rewards
from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl import losses
from grlo_jax.rl.config import GraphDefs, RLConfig, RewardFn
from grlo_jax.rl.layout import Layout
from grlo_jax.rl.state import TrainState


def score_passes(cfg: RLConfig, defs: GraphDefs, state: TrainState, layout: Layout, temperature: float,
                 one_update: bool) -> tuple[jax.Array | None, jax.Array | None, jax.Array | None]:
  """(old log-probs, reference log-probs, values) [B, R], each None when the config needs none:
  no old forward when the step makes `one_update` (the update's own log-probs are the old ones)."""
  sg = jax.lax.stop_gradient
  with jax.named_scope("old_log_prob"):
    old_logp_br = None if one_update else sg(layout.log_probs(defs.actor, state.actor, temperature))
  with jax.named_scope("ref_log_prob"):
    ref_logp_br = sg(layout.log_probs(defs.actor, state.ref, temperature)) if cfg.uses_ref else None
  with jax.named_scope("values"):
    values_br = sg(layout.values(defs.critic, state.critic)) if cfg.uses_critic else None
  return old_logp_br, ref_logp_br, values_br


def token_rewards(cfg: RLConfig, layout: Layout, reward_fn: RewardFn, state: TrainState, batch_rep: dict, roll,
                  old_logp_br: jax.Array | None, ref_logp_br: jax.Array | None) -> tuple[jax.Array, jax.Array, dict]:
  """(scores [B], token-level rewards [B, R], metrics): each score at its response's last token,
  minus kl_coef x KL(old || ref) at every token when the KL is in the reward."""
  mask_br = layout.seqs.mask_br
  with jax.named_scope("reward"):
    score_b = layout.scores(reward_fn, state, batch_rep, roll)
  rewards_br = token_level_rewards(score_b, mask_br)
  metrics = {}
  if cfg.use_kl_in_reward:
    maskf_br = mask_br.astype(jnp.float32)
    kl_br = losses.kl_penalty(old_logp_br, ref_logp_br, cfg.kl_penalty) * maskf_br
    rewards_br = rewards_br - cfg.kl_coef * kl_br
    metrics["actor/reward_kl_penalty"] = adv_lib.masked_mean(kl_br, maskf_br)
  return score_b, rewards_br, metrics
