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
