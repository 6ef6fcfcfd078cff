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
  for s, chunk in [(3, 4), (5, 128)]:
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


def test_one_new_token(hf_and_model):
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=1, lengths=LENGTHS)
  want = _np(generate(model, ids, mask, max_new_tokens=1, temperature=0.0))
  got = _np(generate(model, ids, mask, max_new_tokens=1, temperature=0.0, max_num_seqs=3))
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=k)


def test_sampled_rows_do_not_depend_on_the_slots(hf_and_model):
  """A row's draws are keyed by (row, token index): any slot count gives the same tokens."""
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=2, lengths=LENGTHS)
  kw = dict(max_new_tokens=12, temperature=1.0, top_p=0.9, eos_token_id=[5, 17, 40, 77])
  outs = [_np(generate(model, ids, mask, rng=jax.random.key(7), max_num_seqs=s, prefill_chunk=4, **kw))
          for s in (2, 5)]
  for o in outs[1:]:
    np.testing.assert_array_equal(o["tokens"], outs[0]["tokens"])
    np.testing.assert_allclose(o["logprobs"], outs[0]["logprobs"], atol=1e-5)
  again = _np(generate(model, ids, mask, rng=jax.random.key(7), max_num_seqs=2, prefill_chunk=4, **kw))
  other = _np(generate(model, ids, mask, rng=jax.random.key(8), max_num_seqs=2, prefill_chunk=4, **kw))
  np.testing.assert_array_equal(again["tokens"], outs[0]["tokens"])
  assert (other["tokens"] != outs[0]["tokens"]).any()
  # Log-probs are those of a full forward over prompt + response, at the temperature.
  full_ids = jnp.concatenate([ids, outs[0]["tokens"]], axis=1)
  full_mask = jnp.concatenate([mask, outs[0]["mask"]], axis=1)
  logits = model(full_ids, attention_mask=full_mask)[:, ids.shape[1] - 1:-1]
  want = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), outs[0]["tokens"][..., None], -1)[..., 0]
  np.testing.assert_allclose(outs[0]["logprobs"], np.where(outs[0]["mask"], want, 0), atol=1e-4)


def test_sampled_frequencies_through_refills(hf_and_model):
  """512 copies of one prompt over 5 slots, two tokens each: the first (drawn after a refill's
  prefill) and the second (a decode step) follow the model's softmax (chi-square, pooled bins)."""
  _, model, _ = hf_and_model
  b = 512
  ids1, mask1 = fx.left_padded_batch(seed=3, lengths=(5,))
  ids, mask = np.repeat(ids1, b, 0), np.repeat(mask1, b, 0)
  out = _np(generate(model, ids, mask, max_new_tokens=2, temperature=1.0, rng=jax.random.key(3), max_num_seqs=5))
  assert out["mask"].all()
  p0_v = np.asarray(jax.nn.softmax(model(jnp.asarray(ids1), attention_mask=jnp.asarray(mask1))[0, -1]))
  seq = jnp.concatenate([ids[:, :], out["tokens"][:, :1]], axis=1)
  p1_bv = np.asarray(jax.nn.softmax(model(seq, attention_mask=jnp.ones_like(seq))[:, -1], axis=-1))
  for counts, expected in [(np.bincount(out["tokens"][:, 0], minlength=fx.VOCAB), b * p0_v),
                           (np.bincount(out["tokens"][:, 1], minlength=fx.VOCAB), p1_bv.sum(0))]:
    order = np.argsort(expected)  # pool the rarest tokens into bins expecting >= 20 draws
    bins = np.cumsum(expected[order]) // 20
    obs = np.bincount(bins.astype(int), weights=counts[order])
    exp = np.bincount(bins.astype(int), weights=expected[order])
    chi2 = ((obs - exp) ** 2 / exp).sum()
    dof = len(obs) - 1
    assert chi2 < dof + 3.1 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"


def test_all_rows_at_once_is_the_static_sampler(hf_and_model):
  _, model, _ = hf_and_model
  ids, mask = fx.left_padded_batch(seed=4, lengths=LENGTHS)
  kw = dict(max_new_tokens=6, temperature=1.0, rng=jax.random.key(1))
  want = _np(generate(model, ids, mask, **kw))
  for s in (None, 8, 100):
    got = _np(generate(model, ids, mask, max_num_seqs=s, **kw))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_slots_sharded_over_the_data_axes_equal_one_device(hf_and_model):
  _, _, path = hf_and_model
  ids, mask = fx.left_padded_batch(seed=5, lengths=LENGTHS * 2)
  kw = dict(max_new_tokens=8, temperature=1.0, rng=jax.random.key(4), eos_token_id=[3, 9, 11, 60],
            max_num_seqs=4, prefill_chunk=4)
  single = _np(generate(models.load_pretrained(path), ids, mask, **kw))
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
