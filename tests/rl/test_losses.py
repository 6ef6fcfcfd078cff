"""Losses: parity with verl 0.9.1 (values and autograd gradients), closed forms, and exact
gradient accumulation over micro-batches."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grlo_jax.rl import losses

REF = np.load(pathlib.Path(__file__).with_name("verl_reference") / "verl_0_9_1.npz")
CASES = json.loads(str(REF["cases"]))
TOL = dict(rtol=1e-5, atol=1e-5)


# Each parity test evaluates all of its cases inside one jit: one compilation per test keeps the
# suite fast on a small CPU; failures name the case.


def test_agg_loss_matches_verl():
  @jax.jit
  def all_cases(loss_br, mask_br):
    return [losses.agg_loss(loss_br, mask_br, mode, **(kwargs or {})) for mode, kwargs in CASES["agg"]]

  for i, got in enumerate(all_cases(REF["agg.loss_mat"], REF["mask"])):
    np.testing.assert_allclose(got, REF["agg.loss"][i], **TOL, err_msg=str(CASES["agg"][i]))


def test_policy_loss_and_its_gradient_match_verl():
  def loss_fn(logp_br, mode, clip, low, high, c):
    out = losses.compute_policy_loss(REF["pg.old_log_prob"], logp_br, REF["pg.advantages"], REF["mask"],
                                     cliprange=clip, cliprange_low=low, cliprange_high=high, clip_ratio_c=c,
                                     loss_agg_mode=mode)
    return out[0], out

  @jax.jit
  def all_cases(logp_br):
    return [jax.grad(loss_fn, has_aux=True)(logp_br, *case) for case in CASES["pg"]]

  for i, (grad_br, outputs) in enumerate(all_cases(REF["pg.log_prob"])):
    np.testing.assert_allclose(np.array(outputs), REF[f"pg.{i}.outputs"], **TOL, err_msg=str(CASES["pg"][i]))
    np.testing.assert_allclose(grad_br, REF[f"pg.{i}.grad_log_prob"], **TOL, err_msg=str(CASES["pg"][i]))


def test_value_loss_and_its_gradient_match_verl():
  def loss_fn(vpred_br, mode, clip):
    out = losses.compute_value_loss(vpred_br, REF["vf.returns"], REF["vf.values"], REF["mask"], clip, mode)
    return out[0], out

  @jax.jit
  def all_cases(vpred_br):
    return [jax.grad(loss_fn, has_aux=True)(vpred_br, *case) for case in CASES["vf"]]

  for i, (grad_br, outputs) in enumerate(all_cases(REF["vf.vpreds"])):
    np.testing.assert_allclose(np.array(outputs), REF[f"vf.{i}.outputs"], **TOL, err_msg=str(CASES["vf"][i]))
    np.testing.assert_allclose(grad_br, REF[f"vf.{i}.grad_vpreds"], **TOL, err_msg=str(CASES["vf"][i]))


def test_kl_penalty_and_its_gradient_match_verl():
  def weighted(logp_br, ref_br, kind):
    kl_br = losses.kl_penalty(logp_br, ref_br, kind)
    return (kl_br * REF["kl.weights"]).sum(), kl_br

  @jax.jit
  def all_kinds(logp_br, ref_br):
    return {kind: jax.grad(weighted, argnums=(0, 1), has_aux=True)(logp_br, ref_br, kind) for kind in CASES["kl"]}

  for kind, ((g_logp_br, g_ref_br), kl_br) in all_kinds(REF["kl.log_prob"], REF["kl.ref_log_prob"]).items():
    np.testing.assert_allclose(kl_br, REF[f"kl.{kind}.value"], **TOL, err_msg=kind)
    np.testing.assert_allclose(g_logp_br, REF[f"kl.{kind}.grad_log_prob"], **TOL, err_msg=kind)
    np.testing.assert_allclose(g_ref_br, REF[f"kl.{kind}.grad_ref"], **TOL, err_msg=kind)


def test_entropy_and_logprobs_match_verl():
  @jax.jit
  def outputs(logits_brv):
    logp_fn = lambda x: (losses.logprobs_from_logits(x, REF["labels"]) * REF["kl.weights"]).sum()
    return (losses.entropy_from_logits(logits_brv), losses.logprobs_from_logits(logits_brv, REF["labels"]),
            jax.grad(logp_fn)(logits_brv))

  entropy_br, logp_br, grad_brv = outputs(REF["logits"])
  np.testing.assert_allclose(entropy_br, REF["entropy"], **TOL)
  np.testing.assert_allclose(logp_br, REF["logprobs"], **TOL)
  np.testing.assert_allclose(grad_brv, REF["logprobs.grad_logits"], **TOL)


def test_logit_functions_compute_in_float32():
  logits_brv = REF["logits"][:2].astype(jnp.bfloat16)
  assert jax.eval_shape(losses.entropy_from_logits, logits_brv).dtype == jnp.float32
  logp_br = jax.jit(losses.logprobs_from_logits)(logits_brv, REF["labels"][:2])
  assert logp_br.dtype == jnp.float32
  logits_f32 = logits_brv.astype(np.float32)
  want_br = np.take_along_axis(logits_f32, REF["labels"][:2, :, None], -1)[..., 0] - np.log(np.exp(logits_f32).sum(-1))
  np.testing.assert_allclose(logp_br, want_br, rtol=1e-5, atol=1e-5)


def test_policy_loss_clips_in_closed_form():
  # (advantage, log-ratio) -> per-token loss with eps 0.2 and dual clip 3.
  adv_b = np.array([1.0, 1.0, -1.0, -1.0, -1.0, -2.0, 0.5], np.float32)
  log_ratio_b = np.log(np.array([1.1, 5.0, 0.5, 2.0, 5.0, 1.0, 1.0], np.float32))
  log_ratio_b[-1] = 25.0     # clamped to 20 before exp: ratio e^20, then clipped to 1.2
  want_b = np.array([-1.1, -1.2, 0.8, 2.0, 3.0, 2.0, -0.6])
  # token-sum under a one-hot mask reads off one row's loss; one compilation serves all rows.
  policy_loss = jax.jit(functools.partial(losses.compute_policy_loss, loss_agg_mode="token-sum"))
  for i in range(len(adv_b)):
    loss, clipfrac, kl, lower = policy_loss(np.zeros((7, 1)), log_ratio_b[:, None], adv_b[:, None],
                                            np.eye(7, dtype=np.float32)[:, i:i + 1])
    np.testing.assert_allclose(loss, want_b[i], rtol=1e-5)
    assert float(lower) == float(i == 4)
    if i == 6:
      np.testing.assert_allclose(kl, -20.0, rtol=1e-6)


def test_value_loss_closed_form():
  # (vpred, return) with old value 0 and clip 0.5 -> (loss, clipped term larger?).
  vpred_b = np.array([1.0, 0.2, -1.0, 1.0, 1.0], np.float32)
  ret_b = np.array([0.0, 0.0, 2.0, -2.0, 3.0], np.float32)
  want = [(0.5 * 1.0, 0.0), (0.5 * 0.04, 0.0), (0.5 * 9.0, 0.0), (0.5 * 9.0, 0.0), (0.5 * 6.25, 1.0)]
  value_loss = jax.jit(losses.compute_value_loss)
  for i, (want_loss, want_clipfrac) in enumerate(want):
    loss, clipfrac = value_loss(vpred_b[:, None], ret_b[:, None], np.zeros((5, 1)), np.eye(5)[:, i:i + 1], 0.5)
    np.testing.assert_allclose([loss, clipfrac], [want_loss, want_clipfrac], rtol=1e-6, atol=1e-7)


def test_bad_arguments_raise():
  with pytest.raises(ValueError):
    losses.agg_loss(np.ones((2, 2)), np.ones((2, 2)), "mean")
  with pytest.raises(ValueError):
    losses.agg_loss(np.ones((2, 2)), np.ones((2, 2)), "token-mean", dp_size=2)
  with pytest.raises(ValueError):
    losses.kl_penalty(np.zeros(2), np.zeros(2), "k4")
  with pytest.raises(ValueError):
    losses.compute_policy_loss(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)), clip_ratio_c=1.0)


def _split_rows(x_br, sizes):
  return np.split(np.asarray(x_br), np.cumsum(sizes)[:-1])


# (3, 1, 4, 8) gives the empty row a micro-batch of its own: 0 with global info (NaN without).
@pytest.mark.parametrize("sizes", [(8, 8), (3, 1, 4, 8), (2, 5, 1, 8)])
def test_micro_batches_with_global_info_sum_to_the_mini_batch_loss_and_gradient(sizes):
  mask_br = REF["mask"]
  info = losses.global_batch_info(mask_br)
  parts = list(zip(_split_rows(np.arange(len(mask_br)), sizes), _split_rows(mask_br, sizes)))

  def accumulated(x_br, mode):
    return sum(losses.agg_loss(x_br[rows], m_br, mode, **info) for rows, m_br in parts)

  def whole(x_br, mode):
    return losses.agg_loss(x_br, mask_br, mode)

  @jax.jit
  def all_modes(x_br):
    return {mode: [jax.value_and_grad(f)(x_br, mode) for f in (accumulated, whole)] for mode in losses.LOSS_AGG_MODES}

  for mode, ((got, got_grad_br), (want, want_grad_br)) in all_modes(REF["agg.loss_mat"]).items():
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=mode)
    np.testing.assert_allclose(got_grad_br, want_grad_br, rtol=1e-6, atol=1e-9, err_msg=mode)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_policy_gradient_accumulated_in_a_scan_equals_the_mini_batch_gradient(mode):
  # The RL step's pattern: denominators from the whole mini-batch, a scan over equal micro-batches
  # that sums parameter gradients. The "model" is log_prob = base + features . w.
  k, mb = 4, 4
  feat_brf = np.random.default_rng(5).normal(size=REF["pg.log_prob"].shape + (3,)).astype(np.float32)
  w_f = jnp.array([0.3, -0.2, 0.1])
  data = {key: REF[key] for key in ("pg.log_prob", "pg.old_log_prob", "pg.advantages", "mask")} | {"feat": feat_brf}

  def loss_fn(w_f, d, **info):
    logp_br = d["pg.log_prob"] + d["feat"] @ w_f
    return losses.compute_policy_loss(d["pg.old_log_prob"], logp_br, d["pg.advantages"], d["mask"],
                                      loss_agg_mode=mode, **info)[0]

  @jax.jit
  def accumulated(w_f, data):
    info = losses.global_batch_info(data["mask"])
    micro = jax.tree.map(lambda x: x.reshape((k, mb) + x.shape[1:]), data)

    def step(acc, d):
      loss, grad_f = jax.value_and_grad(loss_fn)(w_f, d, **info)
      return jax.tree.map(jnp.add, acc, (loss, grad_f)), None

    return jax.lax.scan(step, (0.0, jnp.zeros_like(w_f)), micro)[0]

  loss, grad_f = accumulated(w_f, data)
  want_loss, want_grad_f = jax.jit(jax.value_and_grad(loss_fn))(w_f, data)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad_f, want_grad_f, rtol=1e-5, atol=1e-7)
