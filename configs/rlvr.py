r"""RLVR stage: GRPO on prompts with a verifiable `reward_model.ground_truth`, no reward model.

  python launch/train.py --config=configs/rlvr.py --workdir=gs://bucket/rlvr \
      --config.model.policy_path=gs://bucket/grlo_rlhf/export \
      --config.data.train_files=gs://bucket/math_prompts.jsonl

Every record is scored by the verifier `reward.rule` (math: the final answer, `\boxed{}` first,
checked with math-verify; 1 or 0, minus `reward.format_penalty` when no answer can be found),
whatever its `reward_model.style`. Presets: (none) the stage after GRLO on Qwen3-4B; `tiny`.
"""

import ml_collections

from configs import grlo


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  if preset not in ("", "tiny"):
    raise ValueError(f"unknown preset {preset!r} for configs/rlvr.py; known: tiny")
  c = grlo.get_config(preset)
  c.model.rm_path = ""
  c.model.rm_arch = ""  # no reward model: the verifier scores every response
  c.reward.rule = "math"
  c.reward.route = "rule"
  c.algorithm.adv_estimator = "grpo"
  c.rollout.n = 8
  c.data.train_batch_size = 128
  c.actor.ppo_mini_batch_size = 32
  c.data.num_epochs = 1
  if preset == "tiny":
    c.rollout.n = 4
    c.data.train_batch_size = 8
    c.actor.ppo_mini_batch_size = 4
    c.actor.micro_batch_size = 8
    c.data.num_epochs = 100
    c.total_steps = 4
    c.reward.format_penalty = 0.1  # a random policy rarely boxes an answer: some signal anyway
  return c
