"""In-graph sampling: greedy parity with transformers, distributions, stops, seeds and meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from grlo_jax import models, sharding
from grlo_jax.sampling import SamplingParams, argmax, categorical, generate, generate_with_params, sample_logits
from tests.models import hf_fixtures as fx

LENGTHS = (9, 4, 6, 2)


@pytest.fixture(scope="module")
def hf_and_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen3")
  hf = fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), path)
  return hf, models.load_pretrained(path)


def test_greedy_equals_transformers_generate(hf_and_model):
  hf, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=0, lengths=LENGTHS)
  with torch.no_grad():
    want = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None,
                       pad_token_id=fx.PAD)[:, ids.shape[1]:].numpy()
  out = generate(model, ids, mask, max_new_tokens=32, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), want)
  assert np.asarray(out.mask).all() and (np.asarray(out.lengths) == 32).all()
  assert out["tokens"].shape == (4, 32)  # dict-style access too


def test_scanned_and_unrolled_decode_agree(hf_and_model):
  _, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=4, lengths=LENGTHS)
  outs = [generate_with_params(model, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(2),
                               SamplingParams(max_new_tokens=12, temperature=1.0, unroll_decode=u))
          for u in (False, True)]
  np.testing.assert_array_equal(np.asarray(outs[0].tokens), np.asarray(outs[1].tokens))
  np.testing.assert_allclose(np.asarray(outs[0].logprobs), np.asarray(outs[1].logprobs), atol=1e-5)


def test_logprobs_are_those_of_a_full_forward(hf_and_model):
  _, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=1, lengths=LENGTHS)
  out = generate(model, ids, mask, max_new_tokens=8, temperature=0.7, rng=jax.random.key(3))
  full_ids = jnp.concatenate([ids, out.tokens], axis=1)
  full_mask = jnp.concatenate([mask, out.mask], axis=1)
  logits = model(full_ids, attention_mask=full_mask)[:, ids.shape[1] - 1:-1] / 0.7
  want = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), out.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(want), atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_frequencies_follow_softmax(temperature):
  """Chi-square goodness of fit of 40k draws from one row of logits over 8 tokens."""
  logits_v = jnp.array([1.5, 0.3, -0.7, 2.0, 0.0, -1.5, 0.9, 0.2])
  n = 40_000
  p = SamplingParams(max_new_tokens=1, temperature=temperature)
  tok_b, _ = jax.jit(sample_logits, static_argnums=2)(jnp.tile(logits_v, (n, 1)), jax.random.key(0), p)
  counts = np.bincount(np.asarray(tok_b), minlength=8)
  expected = n * np.asarray(jax.nn.softmax(logits_v / temperature))
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 24.32, f"chi2={chi2:.1f} > 24.32 (df=7, p=0.001)"  # critical value, 7 dof


def test_two_level_draw_over_several_vocabulary_blocks():
  """V=300 spans three 128-token blocks, the last one padded; some tokens have zero mass."""
  rng = np.random.default_rng(1)
  logits_v = rng.normal(size=300) * 1.5
  logits_v[rng.choice(300, 40, replace=False)] = -np.inf
  n = 60_000
  tok_b = np.asarray(jax.jit(categorical)(jax.random.key(5), jnp.tile(jnp.asarray(logits_v, jnp.float32), (n, 1))))
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits_v)))
  assert np.all(probs[tok_b] > 0), "drew a token with zero probability"
  # Chi-square over the allowed tokens, rare ones pooled so every bin expects >= 20 draws.
  counts = np.bincount(tok_b, minlength=300)
  allowed = np.flatnonzero(probs > 0)
  common = allowed[probs[allowed] * n >= 20]
  rare = np.setdiff1d(allowed, common)
  obs = np.append(counts[common], counts[rare].sum())
  exp = np.append(probs[common], probs[rare].sum()) * n
  chi2 = ((obs - exp) ** 2 / exp).sum()
  dof = len(obs) - 1
  assert chi2 < dof + 3.1 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"  # ~p=0.001, normal approx.


def test_argmax_is_first_maximum_like_numpy():
  x = np.random.default_rng(0).integers(0, 5, size=(64, 333)).astype(np.float32)  # many ties
  np.testing.assert_array_equal(np.asarray(argmax(jnp.asarray(x))), np.argmax(x, axis=-1))


def test_top_k_and_top_p_stay_in_the_allowed_set():
  rng = np.random.default_rng(0)
  logits_bv = jnp.asarray(rng.normal(size=(512, 50)) * 2, jnp.float32)
  for top_k, top_p in [(5, 1.0), (0, 0.6), (10, 0.3), (1, 1.0)]:
    p = SamplingParams(max_new_tokens=1, temperature=0.8, top_k=top_k, top_p=top_p)
    tok_b, _ = sample_logits(logits_bv, jax.random.key(top_k), p)
    scaled = np.asarray(logits_bv) / 0.8
    order = np.argsort(-scaled, axis=1)
    for b, tok in enumerate(np.asarray(tok_b)):
      allowed = order[b, :top_k] if top_k else order[b]
      probs = np.exp(scaled[b] - scaled[b].max())
      probs /= probs.sum()
      mass_before = np.cumsum(probs[order[b]]) - probs[order[b]]
      allowed = np.intersect1d(allowed, order[b][mass_before < top_p])
      assert tok in allowed, (top_k, top_p, b, tok)


def test_a_row_stops_at_eos_and_others_go_on(hf_and_model):
  _, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=0, lengths=LENGTHS)
  free = np.asarray(generate(model, ids, mask, max_new_tokens=16, temperature=0.0).tokens)
  # Choose as EOS a token that row 0 emits for the first time at step k, absent from some other row.
  k, eos = next((k, t) for k, t in enumerate(free[0]) if k >= 2 and t not in free[0, :k]
                and any(t not in free[b] for b in range(1, 4)))
  out = generate(model, ids, mask, max_new_tokens=16, temperature=0.0, eos_token_id=int(eos), pad_token_id=0)
  tokens, m = np.asarray(out.tokens), np.asarray(out.mask)
  assert m[0, :k + 1].all() and not m[0, k + 1:].any() and out.lengths[0] == k + 1
  np.testing.assert_array_equal(tokens[0, :k + 1], free[0, :k + 1])
  assert (tokens[0, k + 1:] == 0).all()
  for b in range(1, 4):
    if eos not in free[b]:
      np.testing.assert_array_equal(tokens[b], free[b])
      assert m[b].all()


def test_loop_ends_early_when_every_row_is_done(hf_and_model):
  _, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=0, lengths=LENGTHS)
  free = np.asarray(generate(model, ids, mask, max_new_tokens=4, temperature=0.0).tokens)
  stops = sorted({int(t) for t in free[:, 1]})  # every row stops at step 1 at the latest
  out = generate(model, ids, mask, max_new_tokens=64, temperature=0.0, eos_token_id=stops)
  assert int(np.asarray(out.lengths).max()) <= 2 and not np.asarray(out.mask)[:, 2:].any()


def test_same_seed_same_output_and_generate_inside_jit(hf_and_model):
  _, model = hf_and_model
  ids, mask = fx.left_padded_batch(seed=2, lengths=LENGTHS)
  a = generate(model, ids, mask, max_new_tokens=12, temperature=1.0, rng=jax.random.key(7))
  b = generate(model, ids, mask, max_new_tokens=12, temperature=1.0, rng=jax.random.key(7))
  c = generate(model, ids, mask, max_new_tokens=12, temperature=1.0, rng=jax.random.key(8))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()

  @jax.jit
  def outer(m, i, k):
    return generate(m, i, k, max_new_tokens=12, temperature=1.0, rng=jax.random.key(7)).tokens + 0

  np.testing.assert_array_equal(np.asarray(outer(model, ids, mask)), np.asarray(a.tokens))


def test_sharded_batch_gives_the_same_tokens(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  ids, mask = fx.left_padded_batch(seed=3, lengths=(9, 4, 6, 2, 9, 1, 7, 3))
  single = generate(models.load_pretrained(tmp_path), ids, mask, max_new_tokens=10, temperature=1.0,
                    rng=jax.random.key(1))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model = models.load_pretrained(tmp_path, mesh=mesh)
  ids_s = jax.device_put(jnp.asarray(ids), sharding.batch_sharding(mesh, ids.shape))
  mask_s = jax.device_put(jnp.asarray(mask), sharding.batch_sharding(mesh, mask.shape))
  with jax.set_mesh(mesh):
    out = generate(model, ids_s, mask_s, max_new_tokens=10, temperature=1.0, rng=jax.random.key(1))
  assert len(out.tokens.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(single.tokens))
