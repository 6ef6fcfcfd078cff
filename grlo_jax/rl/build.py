"""From an ml_collections config (configs/grlo.py, configs/rlvr.py) to the step's static pieces.

The config is read here and in `trainer.py` only; everything below them takes plain dataclasses.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from grlo_jax import models
from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.score import make_reward_fn
from grlo_jax.rewards.shaping import ShapingConfig
from grlo_jax.rl.state import TrainState, init_state, optimizer_from_config
from grlo_jax.rl.step import GraphDefs, Optimizers, RLConfig, jit_train_step, make_train_step
from grlo_jax.sampling import SamplingParams


def rl_config(c: ml_collections.ConfigDict, stop_token_ids: tuple[int, ...] = (),
              pad_token_id: int = 0) -> RLConfig:
  """The step's knobs; raises naming the key when the batch does not split as configured."""
  sampling = SamplingParams(
      max_new_tokens=c.rollout.response_length, temperature=c.rollout.temperature, top_k=c.rollout.top_k,
      top_p=c.rollout.top_p, stop_token_ids=tuple(stop_token_ids), pad_token_id=pad_token_id,
      cache_dtype=c.rollout.cache_dtype or c.model.compute_dtype,
      max_num_seqs=c.rollout.max_num_seqs or None, prefill_chunk=c.rollout.prefill_chunk)
  if c.rollout.max_num_seqs < 0 or c.rollout.prefill_chunk < 1:
    raise ValueError(f"rollout.max_num_seqs={c.rollout.max_num_seqs} (>= 0; 0 = all rows at once) and "
                     f"rollout.prefill_chunk={c.rollout.prefill_chunk} (>= 1)")
  cfg = RLConfig(
      sampling=sampling, n=c.rollout.n, adv_estimator=c.algorithm.adv_estimator, gamma=c.algorithm.gamma,
      lam=c.algorithm.lam, norm_adv_by_std_in_grpo=c.algorithm.norm_adv_by_std_in_grpo,
      ppo_epochs=c.actor.ppo_epochs, ppo_mini_batch_size=c.actor.ppo_mini_batch_size,
      micro_batch_size=c.actor.micro_batch_size, clip_ratio_low=c.actor.clip_ratio_low,
      clip_ratio_high=c.actor.clip_ratio_high, clip_ratio_c=c.actor.clip_ratio_c,
      loss_agg_mode=c.actor.loss_agg_mode, entropy_coeff=c.actor.entropy_coeff, use_kl_loss=c.actor.use_kl_loss,
      kl_loss_coef=c.actor.kl_loss_coef, kl_loss_type=c.actor.kl_loss_type,
      use_kl_in_reward=c.algorithm.use_kl_in_reward, kl_penalty=c.algorithm.kl_penalty,
      kl_coef=c.algorithm.kl_coef, cliprange_value=c.critic.cliprange_value,
      recompute_old_log_prob=c.actor.recompute_old_log_prob, use_dynamic_bsz=c.actor.use_dynamic_bsz,
      ppo_max_token_len_per_device=c.actor.ppo_max_token_len_per_device)
  cfg.check(c.data.train_batch_size)
  longest = c.data.max_prompt_length + c.rollout.response_length
  if cfg.use_dynamic_bsz and cfg.ppo_max_token_len_per_device < longest:
    raise ValueError(f"actor.ppo_max_token_len_per_device={cfg.ppo_max_token_len_per_device} cannot hold a "
                     f"sequence of data.max_prompt_length + rollout.response_length = {longest} tokens")
  return cfg


def shaping_config(c: ml_collections.ConfigDict) -> ShapingConfig | None:
  s = ShapingConfig(overlong_buffer_len=c.reward.overlong_buffer_len,
                    overlong_penalty_factor=c.reward.overlong_penalty_factor,
                    truncation_penalty=c.reward.truncation_penalty,
                    length_penalty_coef=c.reward.length_penalty_coef)
  return None if s == ShapingConfig() else s


def optimizers(c: ml_collections.ConfigDict) -> Optimizers:
  critic = optimizer_from_config(c.critic.optim) if c.algorithm.adv_estimator == "gae" else None
  return Optimizers(actor=optimizer_from_config(c.actor.optim), critic=critic)


def has_reward_model(c: ml_collections.ConfigDict) -> bool:
  return bool(c.model.rm_path or c.model.rm_arch)


def arch_configs(c: ml_collections.ConfigDict) -> dict[str, models.ModelConfig | None]:
  """Model configs from the `*_arch` presets: shapes of the run without reading any weights.

  Keys: actor, critic (None without GAE), rm (None without a reward model), ref (None without KL).
  `rl_config` checks the batch split first, so an impossible one fails here naming its key.
  """
  attention = c.model.get("attention", "auto")  # absent from configs saved before the key
  dtypes = dict(param_dtype=c.model.param_dtype, dtype=c.model.compute_dtype, remat=c.model.remat,
                attention=attention)
  frozen = dict(param_dtype=c.model.rm_dtype, dtype=c.model.compute_dtype, attention=attention)
  rl = rl_config(c)
  actor = models.preset(c.model.policy_arch, **dtypes)
  return {
      "actor": actor,
      "critic": actor.replace(head="value", num_labels=1) if rl.uses_critic else None,
      "rm": models.preset(c.model.rm_arch, head="score", num_labels=1, **frozen) if has_reward_model(c) else None,
      "ref": actor.replace(**frozen, remat=False) if rl.uses_ref else None,
  }


def abstract_models(c: ml_collections.ConfigDict) -> tuple[GraphDefs, dict[str, nnx.State | None]]:
  """Graph definitions and shape-only parameter states of the run's models (nothing allocated)."""
  defs, states = {}, {}
  for role, cfg in arch_configs(c).items():
    defs[role], states[role] = (None, None) if cfg is None else models.loading.abstract(cfg)
  return GraphDefs(actor=defs["actor"], critic=defs["critic"], rm=defs["rm"]), states


def abstract_state(states: dict[str, nnx.State | None], txs: Optimizers) -> TrainState:
  """The shape-only train state for `states` (from `abstract_models`): optimizer moments included."""
  return jax.eval_shape(lambda s: init_state(s["actor"], txs.actor, s["critic"], txs.critic, rm=s["rm"],
                                             ref=s["ref"]), states)


def abstract_batch(c: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """The global prompt batch the step takes (`data.DEVICE_KEYS`), shape only."""
  bp = (c.data.train_batch_size, c.data.max_prompt_length)
  b = (c.data.train_batch_size,)
  return {"input_ids_bp": jax.ShapeDtypeStruct(bp, jnp.int32),
          "attention_mask_bp": jax.ShapeDtypeStruct(bp, jnp.int32),
          "index_b": jax.ShapeDtypeStruct(b, jnp.int32), "style_b": jax.ShapeDtypeStruct(b, jnp.int32)}


# Qwen3's ids around the assistant text (`rm_template_ids` on its tokenizer): the shapes of the
# in-graph RM input for lowering checks that have no tokenizer.
QWEN3_TEMPLATE = RMTemplate(turn_end_ids=(151645, 198), pad_id=151643, eos_ids=(151645, 151643),
                            assistant_prefix_ids=(151667, 271, 151668, 271))


def abstract_step(c: ml_collections.ConfigDict, mesh: Mesh, template: RMTemplate = QWEN3_TEMPLATE, *,
                  unroll_decode: bool | None = None, host_rewards: bool = True):
  """The config's jitted full-size step and its abstract arguments `(state, batch, rng)`.

  `unroll_decode`: the sampler's decode layout (None: by JAX's backend; False, a layer scan, when
  lowering for TPU or GPU from a CPU host). `host_rewards=False` replaces the rule verifier's host
  callback by in-graph zeros: a callback lowers only for the host's own platform.
  """
  defs, states = abstract_models(c)
  txs = optimizers(c)
  rl = rl_config(c, stop_token_ids=template.eos_ids, pad_token_id=template.pad_id)
  if unroll_decode is not None:
    rl = dataclasses.replace(rl, sampling=dataclasses.replace(rl.sampling, unroll_decode=unroll_decode))
  state = abstract_state(states, txs)
  batch = abstract_batch(c)
  rule = (lambda tokens_br, *_: np.zeros(tokens_br.shape[0], np.float32)) if not defs.rm else None
  rm_input = None
  if defs.rm and c.reward.retokenize:  # the host builds the RM input: stand in for it with zeros
    rm_input = lambda tokens_br, *_: (np.zeros((tokens_br.shape[0], c.reward.rm_max_length), np.int32),) * 2
  if rule is not None and not host_rewards:
    reward_fn = lambda state, batch_rep, prompt_ids_bp, *_: jnp.zeros(prompt_ids_bp.shape[:1], jnp.float32)
  else:
    reward_fn = make_reward_fn(defs.rm, template if defs.rm else None, rule_fn=rule, shaping=shaping_config(c),
                               rm_input_fn=rm_input, rm_input_length=c.reward.rm_max_length,
                               route=c.reward.route)
  fn = jit_train_step(make_train_step(rl, defs, txs, reward_fn), mesh, state, batch)
  return fn, (state, batch, jax.ShapeDtypeStruct((), jax.random.key(0).dtype))


def lower_step(c: ml_collections.ConfigDict, mesh: Mesh, template: RMTemplate = QWEN3_TEMPLATE):
  """`jit(step).lower(...)` of the config's full-size step on abstract inputs: no weights, no
  allocation. A typo in a config or a shape that does not fit fails here, not on a pod."""
  fn, args = abstract_step(c, mesh, template)
  with jax.set_mesh(mesh):
    return fn.lower(*args)
