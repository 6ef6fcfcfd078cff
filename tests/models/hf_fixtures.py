"""Tiny random transformers models saved to disk, with non-default values so ignored fields fail."""

import pathlib

import numpy as np
import torch
import transformers

VOCAB = 160
PAD = 0


def qwen3_config(**kw) -> transformers.Qwen3Config:
  base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=12_345.0,
              rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=PAD)
  return transformers.Qwen3Config(**(base | kw))


def llama_config(**kw) -> transformers.LlamaConfig:
  rope = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
  base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_parameters=rope,
              tie_word_embeddings=False, pad_token_id=PAD)
  return transformers.LlamaConfig(**(base | kw))


def save(model_cls, config, path: pathlib.Path, seed: int = 0) -> torch.nn.Module:
  torch.manual_seed(seed)
  hf = model_cls(config).eval()
  with torch.no_grad():  # HF zero-inits some heads/biases; random values catch a mis-mapped tensor
    for name, p in hf.named_parameters():
      if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      elif name.startswith("score"):
        p.copy_(0.1 * torch.randn_like(p))
  hf.save_pretrained(path)
  return hf


def left_padded_batch(seed: int = 0, lengths=(11, 7, 3, 11), vocab: int = VOCAB):
  """ids [B, T] (pad = PAD on the left) and mask [B, T] for rows of the given lengths."""
  rng = np.random.default_rng(seed)
  t = max(lengths)
  ids = np.full((len(lengths), t), PAD, np.int64)
  mask = np.zeros((len(lengths), t), np.int64)
  for b, n in enumerate(lengths):
    ids[b, t - n:] = rng.integers(1, vocab, size=n)
    mask[b, t - n:] = 1
  return ids, mask


def hf_forward(hf, ids, mask):
  with torch.no_grad():
    return hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float().numpy()
