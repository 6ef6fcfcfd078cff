"""`rl.state.make_optimizer`'s rate schedule against the closed-form warm-up + cosine formula."""

import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax.rl import state as state_lib


def _rates(tx, steps: int) -> np.ndarray:
  """The rate each step used: Adam's step on a constant gradient is -rate * 1 (eps aside)."""
  params, opt = jnp.zeros(()), None
  opt = tx.init(params)
  out = []
  for _ in range(steps):
    upd, opt = tx.update(jnp.ones(()), opt, params)
    out.append(-float(upd))
  return np.asarray(out)


def _expected(lr, warmup, decay, ratio, steps):
  out = []
  for t in range(steps):
    if t < warmup:
      out.append(lr * t / warmup)
    elif decay <= 0:
      out.append(lr)
    else:
      frac = min((t - warmup) / max(decay - warmup, 1), 1.0)
      out.append(lr * (ratio + (1 - ratio) * 0.5 * (1 + np.cos(np.pi * frac))))
  return np.asarray(out)


@pytest.mark.parametrize("warmup,decay,ratio", [(0, 0, 0.0), (3, 0, 0.0), (0, 10, 0.0), (2, 10, 0.1)])
def test_schedule_matches_formula(warmup, decay, ratio):
  tx = state_lib.make_optimizer(1e-2, weight_decay=0.0, grad_clip=0.0, warmup_steps=warmup, eps=0.0,
                                decay_steps=decay, min_lr_ratio=ratio)
  np.testing.assert_allclose(_rates(tx, 14), _expected(1e-2, warmup, decay, ratio, 14), rtol=1e-4, atol=1e-9)  # float32 cosines
