"""The FLOP counts against XLA's own count of the compiled programs (its cost analysis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grlo_jax import models
from grlo_jax.models import flops
from grlo_jax.models.transformer import DECODE_PAD

B, P = 2, 24


def _xla_flops(fn, *args) -> float:
  return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


@pytest.fixture(scope="module")
def model():
  return models.init_model(models.preset("tiny", num_layers=2))


def _one_layer(model):
  # XLA's cost analysis counts a while loop's body once: the forward's layer scan needs one layer.
  return model.cfg.replace(num_layers=1)


def _ids(model, t):
  return jnp.asarray(np.random.default_rng(0).integers(1, model.cfg.vocab_size, (B, t)), jnp.int32)


@pytest.mark.parametrize("head", ["lm", "value", "score"])
def test_forward_matches_xla(model, head):
  m = models.init_model(_one_layer(model).replace(head=head))
  gd, st = nnx.split(m)
  ids = _ids(m, P)
  got = _xla_flops(lambda s, i: nnx.merge(gd, s)(i), st, ids)
  # XLA also counts the elementwise work (norms, RoPE, softmax) the formula leaves out: ~1% here.
  assert flops.forward_flops(m.cfg, B, P, causal=False) == pytest.approx(got, rel=0.03)


def test_head_positions_and_causal_pairs(model):
  cfg = model.cfg
  full = flops.forward_flops(cfg, B, P, causal=False)
  assert full - flops.forward_flops(cfg, B, P, head_positions=1, causal=False) == 2 * B * (P - 1) * flops.head_weights(cfg)
  # Causal counts each query's visible keys: P (P + 1) / 2 pairs instead of P^2.
  visible = int(np.tril(np.ones((P, P))).sum())
  per_pair = 4 * B * cfg.num_heads * cfg.head_dim * cfg.num_layers
  assert full - flops.forward_flops(cfg, B, P, causal=True) == per_pair * (P * P - visible)


def test_generate_matches_xla_prefill_plus_steps(model):
  """Prefill and one decode step, each compiled alone, over per-layer weights and cache (a Python
  loop over the layers, as the CPU decode runs), against generate_flops for two new tokens."""
  gd, st = nnx.split(model)
  ids = _ids(model, P)
  mask = jnp.ones_like(ids, bool)

  def prefill(s, i, m):
    mdl = nnx.merge(gd, s)
    cache = models.KVCache.init(mdl.cfg, B, P + 2).unstack()
    x, cache = mdl.hidden(i, m, cache=cache, layers=mdl.decode_layers())
    return mdl.head(x[:, -1:]), cache

  _, cache = jax.jit(prefill)(st, ids, mask)

  def step(s, tok, c):
    mdl = nnx.merge(gd, s)
    x, c = mdl.hidden(tok, jnp.ones_like(tok, bool), cache=c, layers=mdl.decode_layers())
    return mdl.head(x), c

  got = _xla_flops(prefill, st, ids, mask) + _xla_flops(step, st, ids[:, :1], cache)
  # The decode weights carry DECODE_PAD extra output columns, which the formula does not count.
  cfg = model.cfg
  inputs = 4 * cfg.hidden_size + cfg.num_heads * cfg.head_dim + cfg.intermediate_size  # q k v gate|up, o, down
  padding = 2 * B * (P + 1) * cfg.num_layers * DECODE_PAD * inputs
  assert flops.generate_flops(cfg, B, P, 2, causal=False) + padding == pytest.approx(got, rel=0.02)
  assert flops.generate_flops(model.cfg, B, P, 2, causal=True) < flops.generate_flops(model.cfg, B, P, 2, causal=False)
