"""Logits and scores against transformers (float32, tiny random models, left-padded batches)."""

import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from grlo_jax import models
from grlo_jax.models import chunked_attention
from tests.models import hf_fixtures as fx


@pytest.fixture(params=["xla", "chunked"])
def attention(request, monkeypatch):
  """Each parity test under the dense reference and the chunked path (8-token blocks, so the
  fixtures' rows span several blocks)."""
  monkeypatch.setattr(chunked_attention, "DEFAULT_BLOCK", 8)
  return request.param


def assert_close_to_scale(got, want):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  err = np.abs(got - want).max()
  assert err <= 1e-4 * max(1.0, np.abs(want).max()), f"max abs error {err}, scale {np.abs(want).max()}"


@pytest.mark.parametrize("tied", [False, True])
def test_qwen3_causal_lm(tmp_path, attention, tied):
  hf = fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(tie_word_embeddings=tied), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  assert model.cfg.tie_word_embeddings == tied and model.cfg.rope_theta == 12_345.0
  ids, mask = fx.left_padded_batch()
  want = fx.hf_forward(hf, ids, mask)
  got = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  m = mask.astype(bool)  # HF's values at padding positions are arbitrary
  assert_close_to_scale(np.asarray(got)[m], want[m])
  # No mask at all: a plain full batch.
  assert_close_to_scale(model(jnp.asarray(ids[:1])), fx.hf_forward(hf, ids[:1], np.ones_like(ids[:1])))


def test_qwen3_sequence_classification(tmp_path, attention):
  hf = fx.save(transformers.Qwen3ForSequenceClassification, fx.qwen3_config(num_labels=3), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  ids, mask = fx.left_padded_batch(seed=1)
  got = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  assert got.shape == (4, 3)
  assert_close_to_scale(got, fx.hf_forward(hf, ids, mask))


def test_qwen3_token_classification_is_the_value_head(tmp_path):
  hf = fx.save(transformers.Qwen3ForTokenClassification, fx.qwen3_config(num_labels=1), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32")
  assert model.cfg.head == "value"
  ids, mask = fx.left_padded_batch(seed=2)
  got = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
  want = fx.hf_forward(hf, ids, mask)[..., 0]
  assert got.shape == ids.shape
  assert_close_to_scale(got[mask.astype(bool)], want[mask.astype(bool)])


def test_llama_sequence_classification_with_llama3_rope(tmp_path, attention):
  hf = fx.save(transformers.LlamaForSequenceClassification, fx.llama_config(num_labels=1), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  assert model.cfg.family == "llama" and not model.cfg.qk_norm and model.cfg.rope_llama3 is not None
  ids, mask = fx.left_padded_batch(seed=3, lengths=(24, 13, 5, 24))  # past the original context (8)
  got = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  assert_close_to_scale(got, fx.hf_forward(hf, ids, mask))
  # The scaling matters at these lengths: plain RoPE gives other scores.
  plain = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  plain.cfg = plain.cfg.replace(rope_llama3=None)
  assert np.abs(np.asarray(plain(jnp.asarray(ids), attention_mask=jnp.asarray(mask))) - np.asarray(got)).max() > 1e-4


def test_llama_causal_lm(tmp_path, attention):
  hf = fx.save(transformers.LlamaForCausalLM, fx.llama_config(), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  ids, mask = fx.left_padded_batch(seed=4)
  m = mask.astype(bool)
  assert_close_to_scale(np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))[m],
                        fx.hf_forward(hf, ids, mask)[m])


def test_right_padding_gives_the_same_scores(tmp_path, attention):
  fx.save(transformers.Qwen3ForSequenceClassification, fx.qwen3_config(num_labels=2), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="float32", attention=attention)
  ids, mask = fx.left_padded_batch(seed=5)
  # Roll each row so the padding moves to the right.
  shift = mask.sum(1)
  ids_r = np.stack([np.roll(r, s) for r, s in zip(ids, shift)])
  mask_r = np.stack([np.roll(r, s) for r, s in zip(mask, shift)])
  assert (mask_r[:, 0] == 1).all()
  left = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  right = model(jnp.asarray(ids_r), attention_mask=jnp.asarray(mask_r))
  np.testing.assert_allclose(np.asarray(right), np.asarray(left), atol=1e-5, rtol=1e-5)
