"""The decoder family (Qwen3, Llama-3.x) with LM / value / score heads, and its I/O."""

from grlo_jax.models.config import PRESETS, ModelConfig, preset
from grlo_jax.models.kv_cache import KVCache
from grlo_jax.models.loading import export_hf, init_model, load_pretrained, save_orbax
from grlo_jax.models.transformer import Transformer

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "export_hf", "init_model",
           "load_pretrained", "preset", "save_orbax"]
