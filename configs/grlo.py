r"""RLHF stage of GRLO: PPO + GAE critic on open-ended prompts scored by a reward model.

  python launch/train.py --config=configs/grlo.py --workdir=gs://bucket/run \
      --config.model.policy_path=gs://bucket/Qwen3-4B-Base \
      --config.model.rm_path=gs://bucket/Skywork-Reward-V2-Qwen3-8B \
      --config.data.train_files=gs://bucket/grlo_train_prompts.jsonl

Presets (`--config=configs/grlo.py:NAME`):
  (none)    the paper's recipe: Qwen3-4B-Base policy and critic, a Skywork-Reward-V2 Qwen3 RM
            scored in-graph, 1024 prompts a step, responses up to 3072 tokens, 15 epochs.
  llama_rm  the paper's exact RM, Skywork-Reward-V2-Llama-3.1-8B, through the re-tokenize path.
  tiny      the embedded default: tiny random policy, critic and RM, the prompts that ship with
            the package and a tokenizer built at start-up; trains on a laptop CPU in minutes.
  smollm2   the recipe on a real model on a CPU: SmolLM2-135M-Instruct, PPO + GAE critic against
            a reward model trained by launch/train_rm.py (configs/rm.py:smollm2), KL to the
            reference in the loss (docs/rlhf.md).

Keys follow verl's names where verl has one (docs/config.md maps GRLO's train.sh flags).
Every key needs a rule in grlo_jax/config_schema.py (its valid values, checked at start-up).
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 0  # cap on RL steps; 0 = data.num_epochs full passes
  # Compile the step before the first one and stop, naming the knob and a value that fits, when
  # its memory (XLA's count) exceeds the device's free memory (grlo_jax/memory_check.py).
  c.preflight = True

  # Models. A *_path is an HF or Orbax folder (local or gs://); an empty path initialises the
  # *_arch preset at random (tests, demos). The critic defaults to the policy with a new head.
  c.model = ml_collections.ConfigDict()
  c.model.policy_path = "/path/to/Qwen3-4B-Base"
  c.model.policy_arch = "qwen3_4b_base"
  c.model.critic_path = ""  # "" = policy_path with a new value head
  c.model.rm_path = "/path/to/Skywork-Reward-V2-Qwen3-8B"
  c.model.rm_arch = "qwen3_8b"
  c.model.tokenizer = ""  # "" = policy_path's; "tiny[:VOCAB]" builds the tiny BPE
  c.model.rm_tokenizer = ""  # "" = rm_path's, else the policy's
  c.model.param_dtype = "float32"  # master weights and optimizer state
  c.model.compute_dtype = "bfloat16"
  c.model.rm_dtype = "bfloat16"  # frozen reward model (and reference) weights
  c.model.remat = True  # gradient checkpointing, as the paper's launcher
  # Full-sequence attention: auto (splash on TPU, Pallas flash on GPU, dense or chunked on CPU by
  # length) | xla (dense reference) | chunked (flash-style, plain JAX) | splash | cudnn | pallas_gpu.
  c.model.attention = "auto"

  c.data = ml_collections.ConfigDict()
  c.data.train_files = "/path/to/grlo_train_prompts.jsonl"  # comma-separated; .jsonl / .parquet
  c.data.train_batch_size = 1024  # prompts per RL step
  c.data.max_prompt_length = 1024  # longer prompts are filtered out (counted and logged)
  # A batch is left-padded to the smallest of these widths that holds its longest prompt, else to
  # max_prompt_length; each width met compiles the step once (the GRLO prompts, <= 239 tokens: one).
  c.data.prompt_length_buckets = (256, 512)
  c.data.num_epochs = 15
  c.data.skip_bad_records = False  # True: skip and count malformed records instead of failing
  c.data.chat_template_kwargs = ml_collections.ConfigDict()

  c.rollout = ml_collections.ConfigDict()
  c.rollout.n = 1  # responses per prompt
  c.rollout.response_length = 3072
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0  # 0 = off (verl: -1)
  c.rollout.cache_dtype = ""  # "" = model.compute_dtype
  # Continuous batching (grlo_jax/rollout.py): decode over this many slots, a finished row's slot
  # refilled with the next waiting prompt; 0 = all rows of the step at once (the static sampler).
  # 512 of the recipe's 1024 rows: the rollout then fits a v5p-32 (docs/tpu.md); a batch of at
  # most this many rows (the tiny demo's 16) decodes all at once.
  c.rollout.max_num_seqs = 512
  c.rollout.prefill_chunk = 128  # tokens of a refill's prompts prefilled at a time

  c.algorithm = ml_collections.ConfigDict()
  c.algorithm.adv_estimator = "gae"  # gae | grpo | rloo | reinforce_plus_plus
  c.algorithm.gamma = 1.0
  c.algorithm.lam = 1.0
  c.algorithm.norm_adv_by_std_in_grpo = True
  c.algorithm.use_kl_in_reward = False
  c.algorithm.kl_penalty = "kl"
  c.algorithm.kl_coef = 0.001

  c.actor = ml_collections.ConfigDict()
  c.actor.optim = _optim(lr=1e-6)
  c.actor.ppo_mini_batch_size = 256  # prompts per mini-batch
  c.actor.micro_batch_size = 8  # responses per gradient-accumulation step (memory knob)
  # Sequence packing (verl: use_dynamic_bsz + use_remove_padding): every scoring and update pass
  # runs on rows of ppo_max_token_len_per_device real tokens (several sequences a row, at least
  # max_prompt_length + response_length), one row per device a micro-batch, empty rows skipped;
  # micro_batch_size is then unused. docs/config.md maps verl's flags.
  c.actor.use_dynamic_bsz = True
  c.actor.ppo_max_token_len_per_device = 16384  # verl's ppo_max_token_len_per_gpu default
  c.actor.ppo_epochs = 1
  # One update a step (1 epoch, 1 mini-batch): the old log-probs are the update's own unless True.
  c.actor.recompute_old_log_prob = False
  c.actor.clip_ratio_low = 0.2
  c.actor.clip_ratio_high = 0.2
  c.actor.clip_ratio_c = 3.0
  c.actor.loss_agg_mode = "token-mean"
  c.actor.entropy_coeff = 0.0
  c.actor.use_kl_loss = False
  c.actor.kl_loss_coef = 0.001
  c.actor.kl_loss_type = "low_var_kl"

  c.critic = ml_collections.ConfigDict()
  c.critic.optim = _optim(lr=1e-5)
  c.critic.cliprange_value = 0.5

  c.reward = ml_collections.ConfigDict()
  c.reward.retokenize = False  # True: decode and re-tokenize for an RM with another tokenizer
  c.reward.rm_max_length = 4096  # re-tokenize path: fixed RM input length
  # Which reward scores a record: "style" routes by its reward_model.style (GRLO's "style_mix"),
  # "model" sends every record to the RM, "rule" every record to the verifier (RLVR).
  c.reward.route = "style"
  c.reward.rule = "math"  # verifier for records with reward_model.style == "rule": math | exact
  c.reward.format_penalty = 0.0  # rule rows: subtracted when no final answer can be extracted
  c.reward.overlong_buffer_len = 0  # shaping, all off as in GRLO
  c.reward.overlong_penalty_factor = 1.0
  c.reward.truncation_penalty = 0.0
  c.reward.length_penalty_coef = 0.0

  # Mesh over all devices of all processes; -1 takes the rest. dcn_* multiply across slices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  c.mesh.dcn_data = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 20
  c.checkpoint.max_to_keep = 3
  c.checkpoint.async_save = True

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 1  # console progress line; metrics.jsonl gets every step
  c.log.samples_every_steps = 10  # rollouts (prompt, response, reward) to samples.jsonl
  c.log.num_samples = 4
  c.log.tensorboard = True
  # Each device's dense peak TFLOP/s at the compute dtype (e.g. 989 for an H100 / H200 in bfloat16):
  # with it every step logs perf/mfu beside perf/tflops_per_s. 0: no MFU.
  c.log.peak_tflops = 0.0
  c.max_bad_steps = 3  # stop after this many steps in a row with non-finite losses

  if preset == "llama_rm":
    c.model.rm_path = "/path/to/Skywork-Reward-V2-Llama-3.1-8B"
    c.model.rm_arch = "llama3p1_8b"
    c.reward.retokenize = True
  elif preset == "tiny":
    _tiny(c)
  elif preset == "smollm2":
    _smollm2(c)
  elif preset:
    raise ValueError(f"unknown preset {preset!r} for configs/grlo.py; known: llama_rm, tiny, smollm2")
  return c


def _optim(lr: float) -> ml_collections.ConfigDict:
  """AdamW, constant rate after an optional warm-up (verl's actor/critic optim defaults)."""
  return ml_collections.ConfigDict(dict(lr=lr, weight_decay=0.01, grad_clip=1.0, warmup_steps=0,
                                        betas=(0.9, 0.999)))


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Random 2-layer models, a 512-id BPE built from the shipped prompts, 200 steps: the whole
  path on a laptop CPU in about two minutes, with the mean RM score clearly rising."""
  c.model.policy_path = ""
  c.model.policy_arch = "nano"
  c.model.rm_path = ""
  c.model.rm_arch = "nano"
  c.model.tokenizer = "tiny:512"
  c.model.compute_dtype = "float32"
  c.model.rm_dtype = "float32"
  c.model.remat = False
  c.data.train_files = "tiny"  # grlo_jax/data/tiny_prompts.jsonl
  c.reward.route = "model"  # the random RM scores every prompt, the arithmetic ones too
  c.data.train_batch_size = 16
  c.data.max_prompt_length = 64
  c.data.num_epochs = 100
  c.rollout.response_length = 16
  c.actor.optim.lr = 1e-3
  c.critic.optim.lr = 1e-3
  c.actor.ppo_mini_batch_size = 8
  c.actor.micro_batch_size = 8
  # Padded: 16 prompts of at most 80 tokens are fewer than one packed row a device holds.
  c.actor.use_dynamic_bsz = False
  c.actor.ppo_max_token_len_per_device = 320  # 4 x (64 + 16), when packing
  c.total_steps = 200
  c.checkpoint.every_steps = 50
  c.log.every_steps = 10
  c.log.samples_every_steps = 25


def _smollm2(c: ml_collections.ConfigDict) -> None:
  """SmolLM2-135M-Instruct (the GGUF of docs/smollm2.md) as policy, reference and critic (the policy
  with a new value head), scored by the reward model `launch/train_rm.py --config=configs/rm.py:smollm2`
  wrote (`model.rm_path`: its workdir), on `arithmetic:train` prompts; the recipe's PPO + GAE
  (gamma = lam = 1, whitened advantages, clip 0.2, value clip 0.5) sized for a 2-core CPU:
  8 prompts x 4 responses of <= 48 tokens a step at temperature 0.7, one update a step, remat on,
  the frozen RM / reference in bfloat16. KL to the reference in the reward (0.05 a token,
  InstructGPT's shaping): with the recipe's KL-free loss, or KL in the loss, the policy found the
  RM's blind spot and held-out accuracy fell to 0 by step 15 (docs/rlhf.md)."""
  c.model.policy_path = "models/smollm2"
  c.model.policy_arch = "smollm2_135m"
  c.model.rm_path = "workdirs/rm_smollm2"  # a launch/train_rm.py workdir
  c.model.rm_arch = "smollm2_135m"
  c.model.compute_dtype = "float32"
  c.model.rm_dtype = "bfloat16"
  c.model.remat = True
  c.data.train_files = "arithmetic:train"
  c.data.train_batch_size = 8
  c.data.max_prompt_length = 64
  c.data.num_epochs = 1
  c.reward.route = "model"  # every record to the RM; the verifier only measures (launch/evaluate.py)
  c.rollout.n = 4
  c.rollout.response_length = 48
  c.rollout.temperature = 0.7
  c.algorithm.use_kl_in_reward = True
  c.algorithm.kl_penalty = "kl"
  c.algorithm.kl_coef = 0.05
  c.actor.optim.lr = 2e-5
  c.critic.optim.lr = 5e-5
  c.actor.ppo_mini_batch_size = 8  # one update a step
  c.actor.micro_batch_size = 8
  # The step's sequences (<= 112 tokens each) fit two packed rows of 2048: the recipe's 16384-token
  # rows would hold ~11 GB of activations for the backward on a CPU host.
  c.actor.ppo_max_token_len_per_device = 2048
  # docs/rlhf.md: against earlier reward models held-out accuracy peaked by step 10 and fell after,
  # as the RM score saturated (47.5 -> 35.0 -> 35.5% and 41.5 -> 44.0 -> 25.0% at steps 5, 10, 15);
  # against the preset RM, 8 steps (what the 45-minute pipeline leaves) reach 44.0%.
  c.total_steps = 8
  c.checkpoint.every_steps = 4
  c.checkpoint.max_to_keep = 2  # steps 4 and 8: each evaluated for the chart (docs/rlhf.md)
  c.checkpoint.async_save = False  # an async save's host copy is the run's memory peak
  c.log.samples_every_steps = 2
