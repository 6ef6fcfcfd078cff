"""Shared benchmark set-up: peer-comparable presets, HF weights on disk, timing, provenance."""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from grlo_jax import allocator, models


def log(*args) -> None:
  print(*args, file=sys.stderr, flush=True)


def save_hf_preset(preset: str, path: pathlib.Path) -> pathlib.Path:
  """The preset as a random transformers Qwen3ForCausalLM (torch.manual_seed(0)), as in peers.md."""
  import torch
  import transformers

  cfg = models.preset(preset)
  torch.manual_seed(0)
  hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, pad_token_id=0))
  hf.save_pretrained(path)
  return path


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
  """Median seconds of `repeats` calls (the caller has already warmed up)."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def git_rev() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).parent, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def machine() -> dict:
  return {"cpus": os.cpu_count(), "platform": sys.platform, "malloc": allocator.active()}


def run_peer(python: str, script: str, args: list[str]) -> dict:
  """Run a peer's script (in its own interpreter/venv) and read its last stdout line as JSON."""
  res = subprocess.run([python, str(pathlib.Path(__file__).with_name(script)), *args], capture_output=True,
                       text=True, check=False)
  if res.returncode:
    log(res.stderr[-3000:])
    return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
  return json.loads(res.stdout.strip().splitlines()[-1])


# The long-tail workload (benchmarks/long_tail.py, benchmarks/sampler.py --long_tail): prompt
# lengths as the shipped GRLO prompts', response lengths roughly geometric.
_SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def grlo_prompt_lengths(n: int, seed: int = 0) -> "np.ndarray":
  """[n] prompt lengths drawn from the GRLO prompts' Qwen3 chat-template lengths (mean 90.5,
  43-239 tokens, read from ../shared/data); where that folder is absent, a log-normal of the
  same mean and spread."""
  import numpy as np

  rng = np.random.default_rng(seed)
  prompts, tok_dir = _SHARED_DATA / "grlo_train_prompts.jsonl", _SHARED_DATA / "qwen3_tokenizer"
  if not (prompts.exists() and tok_dir.exists()):
    log(f"{_SHARED_DATA} not found: prompt lengths from a log-normal fit instead")
    return np.clip(rng.lognormal(np.log(86.0), 0.3, n), 8, 1024).astype(np.int32)
  from transformers import AutoTokenizer

  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  lens = []
  for line in prompts.read_text().splitlines():
    text = tok.apply_chat_template(json.loads(line)["prompt"], add_generation_prompt=True, tokenize=False)
    lens.append(len(tok(text)["input_ids"]))
  return rng.choice(np.asarray(lens, np.int32), n)


def long_tail_prompts(n: int, vocab_size: int, seed: int = 0) -> tuple["np.ndarray", "np.ndarray"]:
  """Left-padded random prompts [n, P] (ids, mask) with `grlo_prompt_lengths`, P their maximum."""
  import numpy as np

  lens = grlo_prompt_lengths(n, seed)
  p = int(lens.max())
  rng = np.random.default_rng(seed + 1)
  ids = rng.integers(1, vocab_size, (n, p), dtype=np.int32)
  mask = np.arange(p)[None] >= (p - lens)[:, None]
  return np.where(mask, ids, 0).astype(np.int32), mask.astype(np.int32)


def long_tail_stop_ids(vocab_size: int, mean_length: float, seed: int = 0) -> tuple[int, ...]:
  """round(V / mean_length) random stop ids. A random model's next-token distribution is close to
  uniform, so every sampled token stops its row with chance ~1 / mean_length: response lengths
  are about geometric with that mean (capped at the response length). Benchmarks report the
  lengths they actually got."""
  import numpy as np

  k = max(1, round(vocab_size / mean_length))
  return tuple(int(i) for i in np.random.default_rng(seed).choice(np.arange(1, vocab_size), k, replace=False))
