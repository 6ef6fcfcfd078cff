"""The rollout engine (continuous batching) against the static sampler and transformers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from grlo_jax import models, rollout, sharding
from grlo_jax.sampling import SamplingParams, generate
from tests.models import hf_fixtures as fx

LENGTHS = (9, 4, 6, 2, 11, 3, 7, 1)  # 8 rows of different lengths
SAMPLED = dict(max_new_tokens=12, temperature=0.8, top_p=0.9, eos_token_id=[5, 17, 40, 77], prefill_chunk=4)


@pytest.fixture(scope="module")
def hf_and_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen3")
  hf = fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), path)
  return hf, models.load_pretrained(path), path


def _np(out):
  return {k: np.asarray(getattr(out, k)) for k in ("tokens", "mask", "logprobs", "lengths")}


def test_greedy_with_refills_equals_static_and_transformers(hf_and_model):
  hf, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=0, lengths=LENGTHS)
  with torch.no_grad():
    want = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       max_new_tokens=20, min_new_tokens=20, do_sample=False, eos_token_id=None,
                       pad_token_id=fx.PAD)[:, ids.shape[1]:].numpy()
  # Stops: tokens rows 0 and 2 emit mid-way and row 4's first token, so rows end at different
  # steps (one on its prefill's token) and slots refill; the other rows run to max_new_tokens.
  stops = [int(want[0, 3]), int(want[2, 7]), int(want[4, 0])]
  static = _np(generate(model, ids, mask, max_new_tokens=20, temperature=0.0, eos_token_id=stops))
  assert len(set(static["lengths"].tolist())) > 2 and static["lengths"][4] == 1 and static["lengths"].max() == 20
  for s, chunk in [(3, 4)]:  # 3 chunks for the longest prompt
    p = SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=tuple(stops), max_num_seqs=s,
                       prefill_chunk=chunk)
    out, stats = rollout.generate(model, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), p)
    got = _np(out)
    np.testing.assert_array_equal(got["tokens"], static["tokens"], err_msg=f"S={s}")
    np.testing.assert_array_equal(got["mask"], static["mask"])
    np.testing.assert_array_equal(got["lengths"], static["lengths"])
    np.testing.assert_allclose(got["logprobs"], static["logprobs"], atol=1e-5)
    # Unstopped rows are transformers' greedy tokens; every row is up to its stop.
    m = got["mask"]
    np.testing.assert_array_equal(np.where(m, got["tokens"], -1), np.where(m, want, -1))
    assert int(stats.refills) >= -(-(8 - s) // rollout.refill_rows(s)) + 1  # refills happened
    assert int(stats.decode_tokens) == int(got["lengths"].sum()) - 8
    assert 0 < int(stats.decode_tokens) <= int(stats.row_steps)


def test_sampled_rows_do_not_depend_on_the_slots(hf_and_model):
  """A row's draws are keyed by (row, token index): any slot count gives the same tokens."""
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=2, lengths=LENGTHS)
  outs = [_np(generate(model, ids, mask, rng=jax.random.key(7), max_num_seqs=s, **SAMPLED)) for s in (2, 4)]
  for o in outs[1:]:
    np.testing.assert_array_equal(o["tokens"], outs[0]["tokens"])
    np.testing.assert_allclose(o["logprobs"], outs[0]["logprobs"], atol=1e-5)
  again = _np(generate(model, ids, mask, rng=jax.random.key(7), max_num_seqs=2, **SAMPLED))
  other = _np(generate(model, ids, mask, rng=jax.random.key(8), max_num_seqs=2, **SAMPLED))
  np.testing.assert_array_equal(again["tokens"], outs[0]["tokens"])
  assert (other["tokens"] != outs[0]["tokens"]).any()
  # Log-probs are those of a full forward over prompt + response, at the temperature.
  full_ids = jnp.concatenate([ids, outs[0]["tokens"]], axis=1)
  full_mask = jnp.concatenate([mask, outs[0]["mask"]], axis=1)
  logits = model(full_ids, attention_mask=full_mask)[:, ids.shape[1] - 1:-1] / SAMPLED["temperature"]
  want = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), outs[0]["tokens"][..., None], -1)[..., 0]
  np.testing.assert_allclose(outs[0]["logprobs"], np.where(outs[0]["mask"], want, 0), atol=1e-4)


def _top_p_probs(logits_bv: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
  """softmax(logits / T) restricted to each row's top-p set and renormalised (numpy)."""
  x = logits_bv / temperature
  probs = np.exp(x - x.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1, kind="stable")
  sorted_p = np.take_along_axis(probs, order, -1)
  keep_sorted = (np.cumsum(sorted_p, -1) - sorted_p) < top_p
  keep = np.zeros_like(keep_sorted)
  np.put_along_axis(keep, order, keep_sorted, -1)
  kept = np.where(keep, probs, 0)
  return kept / kept.sum(-1, keepdims=True)


def test_sampled_frequencies_through_refills(hf_and_model):
  """64 seeds x 8 rows over 2 slots: each row's first token (drawn after its refill's prefill)
  and second (a decode step) follow the model's top-p softmax. Chi-square of the counts against
  the sum of the rows' probabilities, rare tokens pooled into bins expecting >= 20 draws."""
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=2, lengths=LENGTHS)
  outs = [_np(generate(model, ids, mask, rng=jax.random.key(100 + i), max_num_seqs=2, **SAMPLED))
          for i in range(64)]
  tok_kn = np.concatenate([o["tokens"][:, :2] for o in outs])  # [512, 2]
  second_k = np.concatenate([o["mask"][:, 1] for o in outs])  # token 0 was not a stop
  ids_k, mask_k = np.tile(ids, (64, 1)), np.tile(mask, (64, 1))
  seq = np.concatenate([ids_k, tok_kn[:, :1]], axis=1)
  seq_mask = np.concatenate([mask_k, np.ones_like(tok_kn[:, :1])], axis=1)
  logits = np.asarray(model(jnp.asarray(seq), attention_mask=jnp.asarray(seq_mask)))
  t, top_p = SAMPLED["temperature"], SAMPLED["top_p"]
  for j in range(2):  # logits at the last prompt token predict token 0; at token 0, token 1
    rows = np.ones_like(second_k) if j == 0 else second_k
    probs_kv = _top_p_probs(logits[rows, ids.shape[1] - 1 + j], t, top_p)
    tok_k = tok_kn[rows, j]
    assert np.all(probs_kv[np.arange(len(tok_k)), tok_k] > 0), "drew outside the top-p set"
    counts, expected = np.bincount(tok_k, minlength=fx.VOCAB), probs_kv.sum(0)
    order = np.argsort(expected)
    bins = (np.cumsum(expected[order]) // 20).astype(int)
    obs, exp = np.bincount(bins, weights=counts[order]), np.bincount(bins, weights=expected[order])
    chi2 = ((obs - exp) ** 2 / exp).sum()
    dof = len(obs) - 1
    assert chi2 < dof + 3.1 * np.sqrt(2 * dof), f"token {j}: chi2={chi2:.1f}, dof={dof}"


def test_all_rows_at_once_is_the_static_sampler(hf_and_model):
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=4, lengths=LENGTHS)
  kw = dict(max_new_tokens=6, temperature=1.0, rng=jax.random.key(1))
  want = _np(generate(model, ids, mask, **kw))
  for s in (None, 8, 100):
    got = _np(generate(model, ids, mask, max_num_seqs=s, **kw))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  with pytest.raises(ValueError, match="prefill_chunk=0"):
    generate(model, ids, mask, max_num_seqs=2, prefill_chunk=0, **kw)


def test_slots_sharded_over_the_data_axes_equal_one_device(hf_and_model):
  """4 slots over data x fsdp = 4 devices (and tensor = 2) against one device, the same rows."""
  _, model1, path = hf_and_model
  ids, mask = fx.left_padded_batch(seed=2, lengths=LENGTHS)
  kw = dict(rng=jax.random.key(7), max_num_seqs=4, **SAMPLED)
  single = _np(generate(model1, ids, mask, **kw))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model = models.load_pretrained(path, mesh=mesh)
  ids_s = jax.device_put(jnp.asarray(ids), sharding.batch_sharding(mesh, ids.shape))
  mask_s = jax.device_put(jnp.asarray(mask), sharding.batch_sharding(mesh, mask.shape))
  with jax.set_mesh(mesh):
    out = generate(model, ids_s, mask_s, **kw)
  assert len(out.tokens.sharding.device_set) == 8
  got = _np(out)
  np.testing.assert_array_equal(got["tokens"], single["tokens"])
  np.testing.assert_allclose(got["logprobs"], single["logprobs"], atol=1e-5)


def test_the_drain_keeps_the_slot_cache_sharded():
  """Compacting the slots gathers inside each data shard: the compiled engine's temporaries stay
  well under one copy of the whole cache (a global gather made XLA replicate it on every device:
  4.8 MiB of temporaries against a 4.5 MiB cache here, ~290 GiB a chip for the recipe on TPU)."""
  from flax import nnx
  cfg = models.preset("nano").replace(num_layers=2)
  mesh = sharding.make_mesh({"fsdp": 8})
  b, p, n, s = 64, 32, 256, 32
  with jax.set_mesh(mesh):
    model = models.init_model(cfg, mesh=mesh)
    ids = jax.device_put(jnp.ones((b, p), jnp.int32), sharding.batch_sharding(mesh, (b, p)))
    params = SamplingParams(max_new_tokens=n, max_num_seqs=s, unroll_decode=False)
    graphdef, state = nnx.split(model)
    compiled = jax.jit(rollout._generate, static_argnames=("graphdef", "p")).lower(
        graphdef, state, ids, ids, jax.random.key(0), params).compile()
  cache_bytes = 2 * cfg.num_layers * s * cfg.num_kv_heads * cfg.head_dim * (p + n) * 4  # k and v, float32
  assert compiled.memory_analysis().temp_size_in_bytes < 0.75 * cache_bytes
