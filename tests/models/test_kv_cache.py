"""Prefill + one-token decode through the KV cache reproduces a full forward."""

import jax
import jax.numpy as jnp
import numpy as np

from grlo_jax import models
from tests.models import hf_fixtures as fx


def test_cached_decode_matches_full_forward():
  cfg = models.ModelConfig(vocab_size=fx.VOCAB, hidden_size=64, intermediate_size=96, num_layers=3,
                           num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=5_000.0)
  model = models.init_model(cfg, seed=1)
  ids, mask = fx.left_padded_batch(seed=0, lengths=(10, 6, 2))
  prompt_len, new = 6, ids.shape[1] - 6
  full = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))

  cache = models.KVCache.init(cfg, batch=3, max_len=ids.shape[1] + 2)  # spare slots stay masked
  logits, cache = model(jnp.asarray(ids[:, :prompt_len]), jnp.asarray(mask[:, :prompt_len]), cache=cache)
  steps = [np.asarray(logits)]
  step = jax.jit(lambda m, i, k, c: m(i, k, cache=c))
  for t in range(prompt_len, prompt_len + new):
    logits, cache = step(model, jnp.asarray(ids[:, t:t + 1]), jnp.asarray(mask[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  cached = np.concatenate(steps, axis=1)
  m = mask.astype(bool)
  np.testing.assert_allclose(cached[m], full[m], atol=2e-5, rtol=2e-5)
  assert int(cache.index) == ids.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.pos_b), mask.sum(1))


def test_cache_dtype_is_configurable():
  cfg = models.preset("tiny").replace(num_layers=1)
  cache = models.KVCache.init(cfg, batch=2, max_len=8, dtype="bfloat16")
  assert cache.k_lbkhs.dtype == jnp.bfloat16 and cache.k_lbkhs.shape == (1, 2, 4, 32, 8)
  assert cache.v_lbksh.dtype == jnp.bfloat16 and cache.v_lbksh.shape == (1, 2, 4, 8, 32)
