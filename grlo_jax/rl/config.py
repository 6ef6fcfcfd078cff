"""The RL step's static pieces: its knobs (verl names), the models' graph definitions, the optimizers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import optax
from flax import nnx

from grlo_jax.decoding import SampleOutput, SamplingParams
from grlo_jax.rl import advantages as adv_lib
from grlo_jax.rl.state import TrainState


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
