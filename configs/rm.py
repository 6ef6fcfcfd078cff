r"""Reward-model training: Bradley-Terry on preference pairs, from a base model with a new score head.

  python launch/train_rm.py --config=configs/rm.py:tiny --workdir=/tmp/rm_tiny
  python launch/train_rm.py --config=configs/rm.py:smollm2 --workdir=DIR \
      --config.model.base_path=models/smollm2 --config.data.train_files=pairs/train.jsonl \
      --config.data.eval_files=pairs/test.jsonl

The workdir then loads as the RL stage's reward model: `--config.model.rm_path=DIR`
(`load_pretrained` reads its newest checkpoint's `policy/` folder: an Orbax model folder).

Presets (`--config=configs/rm.py:NAME`):
  (none)    a Qwen3-4B-Base backbone on a preference file (the paper's policy size).
  tiny      a random 2-layer model and the tiny BPE on planted pairs (chosen ends in " yes"):
            the whole path in about a minute on a CPU.
  smollm2   SmolLM2-135M-Instruct (the GGUF of docs/smollm2.md) on verifier-ranked pairs of its
            own arithmetic answers (`launch/make_pairs.py`; docs/rlhf.md).
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 0  # cap on steps; 0 = data.num_epochs full passes
  c.eval_every_steps = 50  # held-out pair accuracy (data.eval_files) every this many steps and at the end
  c.grad_accum_steps = 1  # micro-batches a step (memory knob; the update is the same)

  c.model = ml_collections.ConfigDict()
  c.model.base_path = "/path/to/Qwen3-4B-Base"  # HF / GGUF / Orbax folder; "" = base_arch at random
  c.model.base_arch = "qwen3_4b_base"  # the size preset for shapes when base_path is empty
  c.model.tokenizer = ""  # "" = base_path's; "tiny[:VOCAB]" builds the tiny BPE
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "bfloat16"
  c.model.remat = True
  c.model.attention = "auto"
  c.model.frozen_layers = 0  # the embedding and this many bottom blocks stay as loaded (no backward through them)

  c.data = ml_collections.ConfigDict()
  c.data.train_files = "/path/to/pairs.jsonl"  # comma-separated .jsonl, or planted:N[:SEED]
  c.data.eval_files = ""  # held-out pairs; "" = none
  c.data.batch_size = 64  # pairs a step
  c.data.eval_batch_size = 64
  c.data.max_length = 2048  # tokens of a rendered side (prompt + reply); longer = a bad record
  c.data.length_buckets = (256, 512, 1024)  # a batch pads to the smallest that holds its longest side
  c.data.num_epochs = 1
  c.data.skip_bad_records = False  # True: log and count bad records and go on; False: stop at the first
  c.data.chat_template_kwargs = ml_collections.ConfigDict()

  c.loss = ml_collections.ConfigDict()
  c.loss.use_margin = False  # True: -log sigmoid(r_c - r_r - margin) with each record's "margin"

  # lr_scheduler_type: "constant" after the warm-up, or "cosine" down to min_lr_ratio * lr at the last step.
  c.optim = ml_collections.ConfigDict(dict(lr=2e-6, weight_decay=0.0, grad_clip=1.0, warmup_steps=0,
                                           lr_scheduler_type="constant", min_lr_ratio=0.0,
                                           betas=(0.9, 0.999)))

  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn_data=1))

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, max_to_keep=2, async_save=True))

  c.log = ml_collections.ConfigDict(dict(every_steps=1, tensorboard=True))

  if preset == "tiny":
    c.model.base_path = ""
    c.model.base_arch = "nano"
    c.model.tokenizer = "tiny:512"
    c.model.compute_dtype = "float32"
    c.model.remat = False
    c.data.train_files = "planted:512"
    c.data.eval_files = "planted:128:1"
    c.data.batch_size = 16
    c.data.eval_batch_size = 32
    c.data.max_length = 64
    c.data.length_buckets = (32,)
    c.data.num_epochs = 2
    c.optim.lr = 1e-3
    c.eval_every_steps = 16
    c.checkpoint.every_steps = 32
    c.log.every_steps = 8
  elif preset == "smollm2":
    _smollm2(c)
  elif preset:
    raise ValueError(f"unknown preset {preset!r} for configs/rm.py; known: tiny, smollm2")
  return c


def _smollm2(c: ml_collections.ConfigDict) -> None:
  """SmolLM2-135M-Instruct with a new score head on its own verifier-ranked arithmetic answers and
  their one-answer edits (docs/rlhf.md): 85 steps of 16 pairs at lr 4e-5, float32 on a CPU."""
  c.model.base_path = "models/smollm2"
  c.model.base_arch = "smollm2_135m"
  c.model.compute_dtype = "float32"
  c.model.remat = False
  # 2234 pairs from 1200 problems: 1034 of two samples, 1200 of a sample and its answer edited.
  c.data.train_files = "pairs/train.jsonl,pairs/train_more.jsonl"
  c.data.eval_files = "pairs/test.jsonl"
  c.data.batch_size = 16
  c.data.eval_batch_size = 32
  c.data.max_length = 160
  c.data.length_buckets = (112,)  # every side is <= 108 tokens (chat template + prompt + 48-token answer)
  c.data.num_epochs = 1
  c.grad_accum_steps = 2  # 8 pairs a micro-batch: peak host memory ~9 GB
  # docs/rlhf.md: 85 steps (1360 of the pairs, shuffled) fit the pipeline's 45 minutes on 2 cores;
  # lr 4e-5 led 2e-5 at every evaluation and a cosine decay ended lower. Training only the top
  # blocks (model.frozen_layers=15) ran 125 steps in the same time and ended lower (0.896 vs 0.905).
  c.total_steps = 85
  c.optim.lr = 4e-5
  c.eval_every_steps = 43  # held out at steps 43 and 85 (an evaluation costs ~30 s)
  c.checkpoint.every_steps = 43
  c.checkpoint.async_save = False
