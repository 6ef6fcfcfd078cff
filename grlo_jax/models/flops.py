"""Matrix-product FLOPs of the decoder: what MFU and the CPU floors divide by.

Counts the matrix products only, 2 FLOPs a multiply-add: the layers' projections, attention's two
products (q.k and p.v) and the head. Norms, RoPE, softmax and the optimizer are left out: 1-2% of
XLA's own count at the tests' sizes (D=256), less for wider models. A backward pass counts twice
its forward, as MFU conventionally does.

`causal=True` counts, for each query, only the keys it can see: model FLOPs, the numerator of
MFU. `causal=False` counts what this implementation multiplies: every position of the sequence in
a forward, every slot of the KV cache in a one-token decode step.
"""

from __future__ import annotations

from grlo_jax.models.config import ModelConfig


def layer_weights(cfg: ModelConfig) -> int:
  """Weights one layer multiplies a token by: q, k, v, o, gate, up, down."""
  d, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  return 2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size


def head_weights(cfg: ModelConfig) -> int:
  """Weights the head multiplies one position by."""
  return cfg.hidden_size * {"lm": cfg.vocab_size, "value": 1, "score": cfg.num_labels}[cfg.head]


def attention_flops(cfg: ModelConfig, rows, query_key_pairs):
  """Attention's two products (q.k and p.v) over `query_key_pairs` pairs a row, all layers
  (ints, floats or NumPy arrays alike)."""
  return 4 * rows * query_key_pairs * cfg.num_heads * cfg.head_dim * cfg.num_layers


def forward_flops(cfg: ModelConfig, rows: int, seq_len: int, head_positions: int | None = None, *,
                  causal: bool = True) -> int:
  """One forward over [rows, seq_len], the head applied at `head_positions` per row (default:
  every position, or the one position a score head reads)."""
  t = seq_len
  if head_positions is None:
    head_positions = 1 if cfg.head == "score" else t
  pairs = t * (t + 1) // 2 if causal else t * t
  return (2 * rows * t * layer_weights(cfg) * cfg.num_layers + attention_flops(cfg, rows, pairs)
          + 2 * rows * head_positions * head_weights(cfg))


def generate_flops(cfg: ModelConfig, rows: int, prompt_len: int, new_tokens: int, *,
                   causal: bool = True) -> int:
  """Prefill over the prompt (head at its last position, which samples the first token), then
  `new_tokens - 1` one-token steps, all over a cache of `prompt_len + new_tokens` slots."""
  p, n = prompt_len, new_tokens
  steps = n - 1
  # Decode step i (1-based) writes slot p + i - 1, so its query sees p + i keys: summed over the
  # steps, steps * p + steps (steps + 1) / 2.
  if causal:
    pairs = p * (p + 1) // 2 + steps * p + steps * (steps + 1) // 2
  else:
    pairs = (p + steps) * (p + n)
  tokens = p + steps
  return (2 * rows * tokens * layer_weights(cfg) * cfg.num_layers + attention_flops(cfg, rows, pairs)
          + 2 * rows * (1 + steps) * head_weights(cfg))
