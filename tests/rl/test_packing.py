"""Sequence packing: the layout functions against a NumPy reference, and the packed step against
the padded one (same updated actor and critic, same loss metrics)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax.rl import packed, packing
from grlo_jax.sampling import SamplingParams
from tests.rl import test_step as T


def _ffd_reference(lengths, row_len):
  """First-fit decreasing in plain Python: (row, start) per sequence, -1 rows for empty ones."""
  fill, out = [], {}
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable, as argsort(-len)
    n = lengths[i]
    if n == 0:
      out[i] = (-1, 0)
      continue
    row = next((r for r, f in enumerate(fill) if f + n <= row_len), None)
    if row is None:
      fill.append(0)
      row = len(fill) - 1
    out[i] = (row, fill[row])
    fill[row] += n
  return [out[i] for i in range(len(lengths))], len(fill)


def test_plan_rows_is_first_fit_decreasing_and_pack_round_trips():
  rng = np.random.default_rng(0)
  n, t, row_len = 12, 10, 16
  mask = rng.random((n, t)) < rng.random((n, 1))  # holes allowed, some rows empty
  mask[0] = False
  mask[1] = True  # a full-length sequence
  ids = rng.integers(1, 100, (n, t)).astype(np.int32)
  lengths = mask.sum(1)
  layout = jax.jit(packing.plan_rows, static_argnums=(1, 2))(jnp.asarray(lengths), row_len, n)
  want, used = _ffd_reference(lengths.tolist(), row_len)
  got_rows = np.where(np.asarray(layout.row_n) == n, -1, np.asarray(layout.row_n))
  np.testing.assert_array_equal(got_rows, [w[0] for w in want])
  np.testing.assert_array_equal(np.asarray(layout.start_n)[lengths > 0], [w[1] for w, l in zip(want, lengths) if l])
  assert int(layout.used) == used

  ids_rl, seg_rl, pos_rl = (np.asarray(x) for x in packing.pack(jnp.asarray(ids), jnp.asarray(mask), layout))
  for i in range(n):  # each sequence's tokens, in order, with positions 0.. and its own segment id
    np.testing.assert_array_equal(ids_rl[seg_rl == i + 1], ids[i][mask[i]])
    np.testing.assert_array_equal(pos_rl[seg_rl == i + 1], np.arange(lengths[i]))
  assert (seg_rl > 0).sum() == lengths.sum()
  assert (ids_rl[seg_rl == 0] == 0).all() and (seg_rl[used:] == 0).all()

  # gather: token k of sequence i from the rows, and next_ids lines up labels with their logits.
  got = np.asarray(packing.gather(jnp.asarray(ids_rl), layout, jnp.broadcast_to(jnp.arange(t), (n, t))))
  for i in range(n):
    np.testing.assert_array_equal(got[i, :lengths[i]], ids[i][mask[i]])
  nxt = np.asarray(packing.gather(packing.next_ids(jnp.asarray(ids_rl)), layout,
                                  jnp.broadcast_to(jnp.arange(t), (n, t))))
  for i in np.flatnonzero(lengths):
    np.testing.assert_array_equal(nxt[i, :lengths[i] - 1], ids[i][mask[i]][1:])


def test_split_shards_is_local_and_matches_the_padded_minis():
  """Mini-batch g takes the same rows in both layouts, and each device only its own rows."""
  b, n_mini, d = 16, 2, 4
  x = jnp.arange(b)
  y = np.asarray(packed.split_shards(x, n_mini, d))  # [n_mini, d, s]
  for g in range(n_mini):
    assert set(y[g].ravel()) == set(range(g, b, n_mini))
    for dev in range(d):  # device dev holds rows [dev * b / d, (dev + 1) * b / d)
      assert set(y[g, dev]) <= set(range(dev * b // d, (dev + 1) * b // d))
  np.testing.assert_array_equal(np.asarray(packed.merge_shards(jnp.asarray(y))), np.arange(b))
  from grlo_jax.rl.step import _split_minis
  padded = np.asarray(_split_minis(x, n_mini, 2))
  for g in range(n_mini):
    assert set(padded[g].ravel()) == set(y[g].ravel())


# Stop ids chosen with the setup's models so that responses are 1, 3, 4 and 8 (= R) tokens long,
# one truncated (tests/rl/test_step.py's tiny policy; checked below, so a change shows).
GREEDY_STOPS = (13, 33, 14)


def _setup(adv, n, prompts, mini, micro, pack, sampling, **kw):
  cfg, defs, txs, st, batch = T.setup(adv=adv, n=n, prompts=prompts, mini=mini, micro=micro, sgd=True,
                                      lr=0.5, **kw)
  cfg = dataclasses.replace(cfg, sampling=sampling, use_dynamic_bsz=pack,
                            ppo_max_token_len_per_device=T.PROMPT + T.RESPONSE + 3)
  return cfg, defs, txs, st, batch


def _run(*args, **kw):
  cfg, defs, txs, st, batch = _setup(*args, **kw)
  step = T.build(cfg, defs, txs, st, batch)
  return (*step(st, batch, jax.random.key(3)), step)


def _stopping(st, stops, sign):
  """The policy with every embedding's first coordinate large (it then dominates the final hidden
  state) and the stop ids' head rows weighing it by +-5: it stops at once (+) or never (-)."""
  st.actor["embed_vd"].value = st.actor["embed_vd"].value.at[:, 0].set(100.0)
  st.actor["lm_head_dv"].value = st.actor["lm_head_dv"].value.at[0, jnp.asarray(stops)].set(5.0 * sign)
  return st


def _assert_same(a, ma, b, mb, critic):
  roles = ("actor", "critic") if critic else ("actor",)
  for role in roles:
    for x, y in zip(jax.tree.leaves(getattr(a, role)), jax.tree.leaves(getattr(b, role))):
      x, y = np.asarray(x), np.asarray(y)
      assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(x), role
      np.testing.assert_allclose(x, y, atol=2e-6, err_msg=role)
  keys = [k for k in ma if not k.startswith("rollout/") and not k.startswith("perf/")]
  assert set(keys) <= set(mb)
  for k in keys:
    np.testing.assert_allclose(np.asarray(ma[k]), np.asarray(mb[k]), rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("adv", ["gae", "grpo"])
def test_packed_step_equals_padded_step(adv):
  """2 mini-batches, several micro-batches (padded) / rows (packed), in-loss KL, responses of 1 to
  R tokens. GAE samples greedily; GRPO at temperature 1 with the same key (identical rollouts
  either way: the rollout is the same function), since greedy makes a group's n responses equal
  and its advantages 0."""
  if adv == "gae":
    kw = dict(n=1, prompts=8, mini=4, micro=2)
    sampling = SamplingParams(max_new_tokens=T.RESPONSE, temperature=0.0, stop_token_ids=GREEDY_STOPS)
  else:
    kw = dict(n=4, prompts=4, mini=2, micro=2)
    sampling = SamplingParams(max_new_tokens=T.RESPONSE, temperature=1.0, stop_token_ids=(5, 9, 13, 21, 33, 40))
  rl = dict(use_kl_loss=True, kl_loss_coef=0.1, entropy_coeff=0.01)
  a, ma, _ = _run(adv, pack=False, sampling=sampling, **kw, **rl)
  assert float(ma["response_length/min"]) == 1 and float(ma["response_length/max"]) == T.RESPONSE
  assert 0 < float(ma["response_length/clip_ratio"]) < 1
  b, mb, step = _run(adv, pack=True, sampling=sampling, **kw, **rl)
  assert float(mb["perf/packed_rows"]) < kw["prompts"] * kw["n"]  # several sequences share rows
  _assert_same(a, ma, b, mb, critic=adv == "gae")

  if adv != "gae":
    return
  # The same compiled step on all-short and on all-long responses: fewer rows, no recompile.
  rows = {}
  for name, sign in (("short", 1.0), ("long", -1.0)):
    st = _stopping(_setup(adv, pack=True, sampling=sampling, **kw, **rl)[3], sampling.stop_token_ids, sign)
    batch = _setup(adv, pack=True, sampling=sampling, **kw, **rl)[4]
    _, m = step(st, batch, jax.random.key(3))
    assert float(m["response_length/mean"]) == (1 if name == "short" else T.RESPONSE)
    rows[name] = float(m["perf/packed_rows"])
  assert rows["short"] < rows["long"]
  assert step._cache_size() == 1
