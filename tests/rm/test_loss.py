"""Bradley-Terry loss and pair metrics against NumPy; gradient accumulation is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grlo_jax import models, sharding
from grlo_jax.rl import state as state_lib
from grlo_jax.rm import loss as loss_lib
from grlo_jax.rm import step as step_lib


def np_bt(c, r, m):
  return np.log1p(np.exp(-(c - r - m)))  # -log sigmoid(c - r - m), independently of softplus


@pytest.mark.parametrize("use_margin", [False, True])
def test_bt_loss_and_accuracy_match_numpy(use_margin):
  rng = np.random.default_rng(0)
  c, r = rng.normal(size=37).astype(np.float32) * 3, rng.normal(size=37).astype(np.float32) * 3
  r[:3] = c[:3]  # ties count as wrong
  m = rng.uniform(0, 2, size=37).astype(np.float32) if use_margin else np.zeros(37, np.float32)
  w = (rng.uniform(size=37) > 0.2).astype(np.float32)
  np.testing.assert_allclose(loss_lib.bradley_terry(jnp.asarray(c), jnp.asarray(r), jnp.asarray(m)),
                             np_bt(c, r, m), rtol=1e-5, atol=1e-6)
  got = jax.device_get(loss_lib.means(loss_lib.pair_metrics(c, r, w, m if use_margin else None)))
  n = w.sum()
  np.testing.assert_allclose(got["loss"], (w * np_bt(c, r, m)).sum() / n, rtol=1e-5)
  np.testing.assert_allclose(got["pair_accuracy"], (w * (c > r)).sum() / n, rtol=1e-6)
  np.testing.assert_allclose(got["margin"], (w * (c - r)).sum() / n, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["score/chosen_mean"], (w * c).sum() / n, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["score/rejected_mean"], (w * r).sum() / n, rtol=1e-5, atol=1e-6)
  # Large differences stay finite (no overflow in the log-sigmoid).
  assert np.isfinite(np.asarray(loss_lib.bradley_terry(jnp.asarray([-1e4, 1e4]), jnp.zeros(2)))).all()


def _batch(rng, b, t, vocab):
  lens = rng.integers(3, t + 1, size=(2, b))
  out = {}
  for i, side in enumerate(("chosen", "rejected")):
    ids = rng.integers(3, vocab, size=(b, t)).astype(np.int32)
    mask = (np.arange(t)[None] < lens[i][:, None]).astype(np.int32)
    out[f"{side}_ids_bt"], out[f"{side}_mask_bt"] = ids * mask, mask
  out["margin_b"] = np.zeros(b, np.float32)
  out["weight_b"] = np.ones(b, np.float32)
  out["weight_b"][-1] = 0.0  # a filler row counts for nothing
  return out


def test_grad_accumulation_is_exact():
  cfg = models.preset("nano", head="score", num_labels=1)
  mesh = sharding.single_device_mesh()
  batch = _batch(np.random.default_rng(1), 8, 12, cfg.vocab_size)
  tx = optax.sgd(1.0)  # params move by the gradient itself (Adam's first step would take its sign)
  outs = []
  with jax.set_mesh(mesh):
    for accum in (1, 4):
      graphdef, params = nnx.split(models.init_model(cfg, seed=3, mesh=mesh))
      st = state_lib.place(state_lib.init_state(params, tx), mesh)
      step = step_lib.jit_rm_step(step_lib.make_rm_step(graphdef, tx, grad_accum_steps=accum), mesh, st, batch)
      st, m = step(st, batch)
      outs.append((jax.device_get(nnx.to_pure_dict(st.actor)), jax.device_get(m)))
  (p1, m1), (p4, m4) = outs
  for k in ("loss", "pair_accuracy", "margin", "grad_norm"):
    np.testing.assert_allclose(m1[k], m4[k], rtol=2e-5, atol=1e-6)
  assert m1["pairs"] == 7
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p4)
