"""Decoder dimensions and options: one frozen dataclass feeds every module.

Size presets are read off the published Hugging Face `config.json` of each Qwen3 model
(Qwen/Qwen3-{0.6B,1.7B,4B,8B,14B,32B}; the -Base checkpoints share their dense shapes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Family = Literal["qwen3", "llama"]
Head = Literal["lm", "value", "score"]
# Full-sequence attention implementations (grlo_jax/models/attention.py).
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "chunked", "splash", "cudnn", "pallas_gpu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Dimensions (V, D, F, L, N, K, H) and options of one decoder."""

  vocab_size: int  # V
  hidden_size: int  # D
  intermediate_size: int  # F
  num_layers: int  # L
  num_heads: int  # N
  num_kv_heads: int  # K
  head_dim: int  # H, independent of D / N in Qwen3
  family: Family = "qwen3"
  head: Head = "lm"
  num_labels: int = 1  # score head outputs [B, num_labels]
  rope_theta: float = 1_000_000.0
  # Llama-3 frequency scaling: {"factor", "low_freq_factor", "high_freq_factor",
  # "original_max_position_embeddings"}; None for plain RoPE.
  rope_llama3: tuple[tuple[str, float], ...] | None = None
  rms_norm_eps: float = 1e-6
  qk_norm: bool = True  # Qwen3 normalises q and k per head; Llama does not
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 40960
  pad_token_id: int | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  dtype: str = "float32"  # compute dtype (activations, KV cache default)
  param_dtype: str = "float32"  # storage dtype of the weights
  remat: bool = False  # rematerialise each block in the backward pass
  # Full-sequence attention: auto | xla | chunked | splash | cudnn | pallas_gpu (models/attention.py).
  attention: str = "auto"

  @property
  def q_per_kv(self) -> int:  # G
    return self.num_heads // self.num_kv_heads

  def replace(self, **kw: Any) -> ModelConfig:
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
    return cls(**d)

  def __post_init__(self):
    # JSON round trips give lists; keep the config hashable (it is static under jit).
    if self.rope_llama3 is not None:
      object.__setattr__(self, "rope_llama3", tuple(sorted((k, float(v)) for k, v in dict(self.rope_llama3).items())))
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head not in ("lm", "value", "score"):
      raise ValueError(f"head must be 'lm', 'value' or 'score', got {self.head!r}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {self.attention!r}")
    if self.family not in ("qwen3", "llama"):
      raise ValueError(f"family must be 'qwen3' or 'llama', got {self.family!r}")


def _qwen3(vocab, d, f, l, n, k, tie) -> ModelConfig:
  return ModelConfig(vocab_size=vocab, hidden_size=d, intermediate_size=f, num_layers=l, num_heads=n,
                     num_kv_heads=k, head_dim=128, tie_word_embeddings=tie, bos_token_id=151643,
                     eos_token_id=151645, pad_token_id=151643)


# name -> dims.          vocab     D      F      L   N   K   tied
PRESETS: dict[str, ModelConfig] = {
    "qwen3_0p6b": _qwen3(151936, 1024, 3072, 28, 16, 8, True),
    "qwen3_1p7b": _qwen3(151936, 2048, 6144, 28, 16, 8, True),
    "qwen3_4b": _qwen3(151936, 2560, 9728, 36, 32, 8, True),
    "qwen3_8b": _qwen3(151936, 4096, 12288, 36, 32, 8, False),
    "qwen3_14b": _qwen3(151936, 5120, 17408, 40, 40, 8, False),
    "qwen3_32b": _qwen3(151936, 5120, 25600, 64, 64, 8, False),
    # Benchmark / test sizes shared with ../shared/peers.md.
    "tiny": ModelConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4,
                        num_heads=8, num_kv_heads=4, head_dim=32),
    # Test size: the training program's end-to-end tests (with the "tiny:512" tokenizer).
    "nano": ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=16),
    "small": ModelConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
                         num_heads=8, num_kv_heads=4, head_dim=64),
}
PRESETS["qwen3_4b_base"] = PRESETS["qwen3_4b"]
# Llama-3.1-8B (the paper's Skywork-Reward-V2-Llama-3.1-8B reward model backbone).
PRESETS["llama3p1_8b"] = ModelConfig(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, family="llama", qk_norm=False, rope_theta=500_000.0, rms_norm_eps=1e-5,
    rope_llama3=(("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
                 ("original_max_position_embeddings", 8192.0)),
    max_position_embeddings=131072, bos_token_id=128000, eos_token_id=128009, pad_token_id=128256 - 1)
# SmolLM2-135M(-Instruct) (HuggingFaceTB; Llama architecture, tied embeddings): the GGUF demo.
PRESETS["smollm2_135m"] = ModelConfig(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
    head_dim=64, family="llama", qk_norm=False, rope_theta=100_000.0, rms_norm_eps=1e-5,
    tie_word_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def preset(name: str, **overrides: Any) -> ModelConfig:
  """A size preset by name, e.g. `preset("qwen3_4b_base", head="value")`."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)
