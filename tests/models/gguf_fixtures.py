"""Tiny random transformers models written to GGUF with the `gguf` package's writer, laid out as
llama.cpp's `convert_hf_to_gguf.py` writes them (names, metadata, Llama's q/k permutation)."""

import json
import pathlib

import gguf
import numpy as np
import torch
import transformers
from gguf import quants

# HF suffix -> llama.cpp name.
_LAYER = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
          "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
          "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_norm.weight": "attn_q_norm.weight",
          "self_attn.k_norm.weight": "attn_k_norm.weight",
          "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
          "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute, verbatim in numpy."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def random_model(arch: str, vocab: int, seed: int = 0, **kw) -> torch.nn.Module:
  """A random LlamaForCausalLM / Qwen3ForCausalLM whose matrices all have rows of 32k elements
  (GGUF block quantisation works in blocks of 32)."""
  base = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
              rope_theta=12_345.0, tie_word_embeddings=False, max_position_embeddings=256)
  cfg_cls, model_cls = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if arch == "llama" else
                        (transformers.Qwen3Config, transformers.Qwen3ForCausalLM))
  if arch == "qwen3":
    base["head_dim"] = 128  # transformers' GGUF config mapping leaves Qwen3's head_dim at its default
  torch.manual_seed(seed)
  hf = model_cls(cfg_cls(**(base | kw))).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
  return hf


def tokenizer_metadata(writer: gguf.GGUFWriter, tok: transformers.PreTrainedTokenizerFast, pre: str) -> None:
  """A byte-level BPE tokenizer as llama.cpp stores it (`tokenizer.ggml.*`)."""
  spec = json.loads(tok.backend_tokenizer.to_str())
  vocab = {**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}
  tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
  special = {t["content"] for t in spec["added_tokens"] if t["special"]}
  merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types([int(gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL)
                          for t in tokens])
  writer.add_token_merges(merges)
  writer.add_eos_token_id(tok.eos_token_id)
  writer.add_pad_token_id(tok.pad_token_id)
  writer.add_add_bos_token(False)
  writer.add_chat_template(tok.chat_template)


def write_gguf(hf: torch.nn.Module, path: pathlib.Path, qtype: str = "F32", tokenizer=None,
               pre: str = "qwen2", arch: str | None = None,
               random_bytes: dict[str, str] | None = None) -> pathlib.Path:
  """Writes `hf` as llama.cpp would: matrices in `qtype`, norms in F32. `random_bytes`
  {GGUF tensor name: type}: those tensors are random blocks of that type instead."""
  c = hf.config
  arch = arch or ("llama" if isinstance(hf, transformers.LlamaForCausalLM) else "qwen3")
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(c.rope_parameters["rope_theta"])
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_key_length(c.head_dim)
  w.add_value_length(c.head_dim)
  if arch == "llama":
    w.add_rope_dimension_count(c.head_dim)
  w.add_vocab_size(c.vocab_size)
  if tokenizer is not None:
    tokenizer_metadata(w, tokenizer, pre)
  q = gguf.GGMLQuantizationType[qtype]
  heads = {"self_attn.q_proj.weight": c.num_attention_heads, "self_attn.k_proj.weight": c.num_key_value_heads}
  for name, t in hf.state_dict().items():
    if name == "lm_head.weight" and c.tie_word_embeddings:
      continue  # llama.cpp writes no output.weight for tied embeddings
    x = t.detach().float().numpy()
    if name in _TOP:
      gname = _TOP[name]
    else:
      layer, suffix = name.removeprefix("model.layers.").split(".", 1)
      gname = f"blk.{layer}.{_LAYER[suffix]}"
      if arch == "llama" and suffix in heads:
        x = llama_cpp_permute(x, heads[suffix])
    if gname in (random_bytes or {}):
      rq = gguf.GGMLQuantizationType[random_bytes[gname]]
      byte_shape = quants.quant_shape_to_byte_shape(x.shape, rq)
      w.add_tensor(gname, np.random.default_rng(0).integers(0, 256, byte_shape, dtype=np.uint8), raw_dtype=rq)
    elif x.ndim == 1 or q == gguf.GGMLQuantizationType.F32:
      w.add_tensor(gname, np.ascontiguousarray(x, np.float32))
    else:
      w.add_tensor(gname, quants.quantize(np.ascontiguousarray(x), q), raw_dtype=q)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def reference(path: pathlib.Path) -> torch.nn.Module:
  """transformers' own GGUF loader on the file."""
  return transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
