"""GGUF in: small random Llama / Qwen3 models written with gguf's writer load to the logits of
transformers' own GGUF loader (and of the model they were written from); the tokenizer from the
file's metadata encodes as the original; unsupported architectures and types fail naming them."""

import os
import pathlib
import subprocess
import sys

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from grlo_jax import data, models
from grlo_jax.models import gguf as gguf_lib
from tests.models import gguf_fixtures as gf

VOCAB = 512


@pytest.fixture(scope="module")
def tiny_tok():
  return data.build_tiny_tokenizer(VOCAB)


def _ids(seed=0, shape=(2, 12)):
  return np.random.default_rng(seed).integers(3, VOCAB, size=shape)


def _hf_logits(hf, ids):
  with torch.no_grad():
    return hf(input_ids=torch.from_numpy(ids)).logits.float().numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_logits_match_transformers_gguf_loader(tmp_path, arch, qtype):
  original = gf.random_model(arch, VOCAB, seed=1)
  path = gf.write_gguf(original, tmp_path / f"tiny-{arch}.{qtype}.gguf", qtype)
  ours = models.load_pretrained(path, dtype="float32")
  assert (ours.cfg.family, ours.cfg.qk_norm, ours.cfg.tie_word_embeddings) == (arch, arch == "qwen3", False)
  ids = _ids()
  got = np.asarray(ours(jnp.asarray(ids)))
  want = _hf_logits(gf.reference(path), ids)  # transformers dequantises with gguf too
  assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
  # And against the model the file was written from: exact for F32 (so the q/k un-permutation is
  # right, not just the same as transformers'), the quantisation error for Q8_0.
  err = np.abs(got - _hf_logits(original, ids)).max()
  assert err <= (1e-5 if qtype == "F32" else 2e-2) * np.abs(want).max(), err
  if qtype == "Q8_0":
    assert err > 1e-6  # the weights really went through Q8_0


def test_folder_holding_one_gguf_and_tied_embeddings(tmp_path):
  original = gf.random_model("llama", VOCAB, seed=2, tie_word_embeddings=True)
  gf.write_gguf(original, tmp_path / "m.gguf", "F16")
  ours = models.load_pretrained(tmp_path, dtype="float32")
  assert ours.cfg.tie_word_embeddings
  ids = _ids(1)
  want = _hf_logits(original, ids)
  assert np.abs(np.asarray(ours(jnp.asarray(ids))) - want).max() <= 1e-2 * np.abs(want).max()
  (tmp_path / "other.gguf").write_bytes((tmp_path / "m.gguf").read_bytes())
  with pytest.raises(ValueError, match="several GGUF files"):
    models.load_pretrained(tmp_path)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1"])
def test_dequantisation_matches_transformers(qtype):
  """gguf's numpy dequantiser (ours) against transformers' torch one (an independent
  implementation) on random blocks: the K-quants, which gguf's numpy writer cannot write."""
  from transformers.integrations.gguf import dequant

  qt = gguf.GGMLQuantizationType[qtype]
  _, size = gguf.GGML_QUANT_SIZES[qt]
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, 256, size=(32, size), dtype=np.uint8)
  # Random bytes are valid blocks except for the float16 scales: keep those finite and small.
  scale_at = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (size - 2,), "Q4_0": (0,), "Q4_1": (0, 2)}[qtype]
  for at in scale_at:
    blocks[:, at:at + 2] = (rng.standard_normal((32, 1)) * 0.01).astype(np.float16).view(np.uint8)
  ours = gguf.quants.dequantize(blocks.reshape(4, -1), qt)
  theirs = dequant.dequantize(torch.from_numpy(blocks.reshape(-1)), int(qt)).numpy()
  assert np.isfinite(ours).all() and np.abs(ours).max() > 0
  np.testing.assert_allclose(ours.reshape(-1), theirs, rtol=1e-6, atol=1e-7)
  assert qtype in gguf_lib.SUPPORTED_TYPES


def test_tokenizer_from_gguf_metadata_encodes_like_the_original(tmp_path, tiny_tok):
  path = gf.write_gguf(gf.random_model("qwen3", VOCAB), tmp_path / "t.gguf", tokenizer=tiny_tok, pre="qwen2")
  tok = data.load_tokenizer(path)
  texts = ["What is 12 + 34? Please put your final answer within \\boxed{}.",
           "  Leading spaces, tabs\tand\nnew lines\n\n", "Ünïcödé and émojis 🙂 don't break it's 1234567",
           "<|im_start|>user\nhi<|im_end|>\n"]
  for text in texts:
    assert tok.encode(text, add_special_tokens=False) == tiny_tok.encode(text, add_special_tokens=False), text
  chat = [{"role": "user", "content": "What is 2 + 3?"}]
  assert (tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
          == tiny_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
  assert data.special_ids(tok) == data.special_ids(tiny_tok)
  # A folder holding the file loads the same tokenizer.
  assert data.load_tokenizer(tmp_path).encode(texts[0]) == tok.encode(texts[0])


def test_unsupported_architecture_is_named(tmp_path):
  path = gf.write_gguf(gf.random_model("llama", VOCAB), tmp_path / "x.gguf", arch="gemma2")
  with pytest.raises(ValueError, match="unsupported GGUF architecture 'gemma2'"):
    models.load_pretrained(path)


def test_unsupported_quant_type_is_named(tmp_path):
  path = gf.write_gguf(gf.random_model("llama", VOCAB), tmp_path / "iq.gguf", "Q8_0",
                       random_bytes={"blk.0.ffn_up.weight": "IQ4_NL"})
  with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight has quantisation type IQ4_NL"):
    models.load_pretrained(path)


def test_convert_cli_gguf_to_hf_and_orbax(tmp_path, tiny_tok):
  root = pathlib.Path(__file__).resolve().parents[2]
  original = gf.random_model("llama", VOCAB, seed=3)
  path = gf.write_gguf(original, tmp_path / "m.gguf", tokenizer=tiny_tok)
  env = os.environ | {"PYTHONPATH": str(root)}  # this checkout's grlo_jax, not an installed one
  for cmd in ("gguf-to-hf", "gguf-to-orbax"):
    subprocess.run([sys.executable, str(root / "launch" / "convert.py"), cmd, f"--src={path}",
                    f"--dst={tmp_path / cmd}"], check=True, cwd=root, capture_output=True, env=env)
  ids = _ids(2)
  want = _hf_logits(original, ids)
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gguf-to-hf", dtype=torch.float32)
  assert np.abs(_hf_logits(hf.eval(), ids) - want).max() <= 1e-5 * np.abs(want).max()
  orbax = models.load_pretrained(tmp_path / "gguf-to-orbax")
  assert np.abs(np.asarray(orbax(jnp.asarray(ids))) - want).max() <= 1e-5 * np.abs(want).max()
  text = "What is 12 + 34?"
  assert data.load_tokenizer(tmp_path / "gguf-to-hf").encode(text) == tiny_tok.encode(text)
