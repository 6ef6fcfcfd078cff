"""Writes verl_0_9_1.npz: seeded inputs and verl 0.9.1's outputs for the tests in tests/rl.

verl is never a dependency of grlo_jax; it lives in a throwaway venv that reuses the system
torch (2.13.0, CPU). Every package below is installed with --no-deps so that nothing pulls
another torch. To regenerate, from the repository root:

  python3 -m venv --system-site-packages /tmp/verl_env
  /tmp/verl_env/bin/pip install --no-deps verl==0.9.1 ray tensordict==0.10.0 pyvers \
      omegaconf hydra-core antlr4-python3-runtime==4.9.3 codetiming
  /tmp/verl_env/bin/python tests/rl/verl_reference/make_reference.py

Functions referenced: verl.trainer.ppo.core_algos.{compute_gae_advantage_return,
compute_grpo_outcome_advantage, compute_rloo_outcome_advantage,
compute_reinforce_plus_plus_outcome_advantage, agg_loss, compute_policy_loss_vanilla
(cross-checked against the deprecated compute_policy_loss), compute_value_loss, kl_penalty} and
verl.utils.torch_functional.{entropy_from_logits, logprobs_from_logits}. Gradients come from
torch autograd. Case parameters are stored as a JSON string under the key "cases".
"""

import json
import pathlib
import warnings

import numpy as np
import torch
import verl
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo import core_algos
from verl.utils import torch_functional as verl_F
from verl.workers.config import ActorConfig

assert verl.__version__ == "0.9.1", verl.__version__
OUT = pathlib.Path(__file__).with_name("verl_0_9_1.npz")
B, R, V = 16, 12, 32
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KL_KINDS = ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "kl+", "k1+", "abs+", "mse+", "k2+",
            "low_var_kl+", "k3+"]


def t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
  return torch.tensor(x, requires_grad=grad)


def f32(x) -> np.ndarray:
  if isinstance(x, (list, tuple)):
    return np.array([f32(v) for v in x], np.float32)
  return np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, dtype=np.float32)


def make_mask() -> np.ndarray:
  # Ragged lengths, a row with only position 0, a fully empty row, interior zeros (tool turns).
  lengths = [12, 9, 1, 0, 5, 12, 7, 3, 11, 2, 12, 6, 8, 4, 10, 1]
  mask_br = (np.arange(R)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
  mask_br[0, 3:5] = 0.0
  mask_br[5, 6] = 0.0
  mask_br[8, 1:4] = 0.0
  mask_br[12, 2] = 0.0
  return mask_br


def last_valid(mask_br: np.ndarray) -> np.ndarray:
  return np.where(mask_br.any(-1), R - 1 - np.argmax(mask_br[:, ::-1], axis=-1), -1)


def main() -> None:
  warnings.simplefilter("ignore")
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  out: dict[str, np.ndarray] = {}
  cases: dict[str, list] = {}
  mask_br = make_mask()
  out["mask"] = mask_br

  # GAE: dense rewards and a critic everywhere, padding included, so ignored entries must stay ignored.
  out["gae.rewards"] = rng.normal(size=(B, R)).astype(np.float32)
  out["gae.values"] = rng.normal(size=(B, R)).astype(np.float32)
  cases["gae"] = [[1.0, 1.0], [0.99, 0.95], [0.9, 0.0]]
  for i, (gamma, lam) in enumerate(cases["gae"]):
    adv, ret = core_algos.compute_gae_advantage_return(
        t(out["gae.rewards"]), t(out["gae.values"]), t(mask_br), gamma=gamma, lam=lam)
    out[f"gae.{i}.advantages"], out[f"gae.{i}.returns"] = f32(adv), f32(ret)

  # Outcome estimators: one score at the last valid token, plus shaping at position 0 on a few rows
  # (verl sums the whole row, mask or not). Groups: random (4), all-equal 1.0 (3), singleton,
  # random (4), all-equal 0.0 (2), random (2); row order shuffled.
  uids = np.array(["a"] * 4 + ["b"] * 3 + ["c"] + ["d"] * 4 + ["e"] * 2 + ["f"] * 2)
  uids = uids[rng.permutation(B)]
  score_b = rng.normal(size=B).astype(np.float32)
  score_b[uids == "b"] = 1.0
  score_b[uids == "e"] = 0.0
  outcome_br = np.zeros((B, R), np.float32)
  last_b = last_valid(mask_br)
  outcome_br[np.arange(B), np.maximum(last_b, 0)] += score_b
  shaped_b = (uids == "a") | (uids == "f")
  outcome_br[shaped_b, 0] += rng.normal(size=shaped_b.sum()).astype(np.float32)
  out["outcome.rewards"] = outcome_br
  out["outcome.index"] = np.unique(uids, return_inverse=True)[1].astype(np.int32)
  for norm in (True, False):
    adv, ret = core_algos.compute_grpo_outcome_advantage(
        t(outcome_br), t(mask_br), uids, epsilon=1e-6, norm_adv_by_std_in_grpo=norm)
    out[f"grpo.norm{int(norm)}.advantages"], out[f"grpo.norm{int(norm)}.returns"] = f32(adv), f32(ret)
  adv, ret = core_algos.compute_rloo_outcome_advantage(t(outcome_br), t(mask_br), uids, epsilon=1e-6)
  out["rloo.advantages"], out["rloo.returns"] = f32(adv), f32(ret)
  cases["reinforce_plus_plus"] = [1.0, 0.95]
  for i, gamma in enumerate(cases["reinforce_plus_plus"]):
    adv, ret = core_algos.compute_reinforce_plus_plus_outcome_advantage(
        t(out["gae.rewards"]), t(mask_br), config=AlgoConfig(gamma=gamma))
    out[f"rpp.{i}.advantages"], out[f"rpp.{i}.returns"] = f32(adv), f32(ret)

  # agg_loss, local (defaults) and with verl's global-batch arguments.
  out["agg.loss_mat"] = rng.normal(size=(B, R)).astype(np.float32)
  cases["agg"] = [[m, None] for m in AGG_MODES] + [
      [m, dict(dp_size=2, batch_num_tokens=150, global_batch_size=20, loss_scale_factor=64)] for m in AGG_MODES]
  out["agg.loss"] = np.array([
      f32(core_algos.agg_loss(t(out["agg.loss_mat"]), t(mask_br), m, **(kw or {})))
      for m, kw in cases["agg"]], np.float32)

  # Policy loss: log-ratios ~ N(0, 0.6) so both clips fire, a few beyond the +-20 clamp, one zero advantage.
  old_br = (-3.0 * rng.random((B, R))).astype(np.float32)
  logp_br = (old_br + 0.6 * rng.normal(size=(B, R))).astype(np.float32)
  logp_br[1, 0], logp_br[6, 2], logp_br[9, 1], logp_br[10, 5] = old_br[[1, 6, 9, 10], [0, 2, 1, 5]] + [25, -25, 21, -30]
  adv_br = rng.normal(size=(B, R)).astype(np.float32)
  adv_br[1, 0], adv_br[6, 2], adv_br[10, 5], adv_br[2, 0] = -1.5, 0.7, -0.4, 0.0
  out["pg.old_log_prob"], out["pg.log_prob"], out["pg.advantages"] = old_br, logp_br, adv_br
  cases["pg"] = [[m, 0.2, None, None, 3.0] for m in AGG_MODES] + [
      ["token-mean", 0.2, 0.2, 0.28, 3.0], ["seq-mean-token-mean", 0.1, None, 0.3, 2.0]]
  for i, (mode, clip, low, high, c) in enumerate(cases["pg"]):
    logp = t(logp_br, grad=True)
    config = ActorConfig(strategy="fsdp", clip_ratio=clip, clip_ratio_low=low, clip_ratio_high=high,
                         clip_ratio_c=c, ppo_micro_batch_size_per_gpu=1, rollout_n=1)
    loss, metrics = core_algos.compute_policy_loss_vanilla(
        t(old_br), logp, t(adv_br), t(mask_br), loss_agg_mode=mode, config=config)
    old_api = core_algos.compute_policy_loss(
        t(old_br), t(logp_br), t(adv_br), t(mask_br), cliprange=clip, cliprange_low=low,
        cliprange_high=high, clip_ratio_c=c, loss_agg_mode=mode)
    assert torch.equal(old_api[0], loss.detach()), "vanilla and deprecated compute_policy_loss disagree"
    (grad,) = torch.autograd.grad(loss, logp)
    out[f"pg.{i}.outputs"] = f32([loss, old_api[1], old_api[2], old_api[3]])
    out[f"pg.{i}.grad_log_prob"] = f32(grad)

  # Value loss.
  values_br = rng.normal(size=(B, R)).astype(np.float32)
  out["vf.values"] = values_br
  out["vf.vpreds"] = (values_br + rng.normal(size=(B, R))).astype(np.float32)
  out["vf.returns"] = (values_br + rng.normal(size=(B, R))).astype(np.float32)
  cases["vf"] = [[m, 0.5] for m in AGG_MODES] + [["token-mean", 0.2]]
  for i, (mode, clip) in enumerate(cases["vf"]):
    vpreds = t(out["vf.vpreds"], grad=True)
    loss, clipfrac = core_algos.compute_value_loss(
        vpreds, t(out["vf.returns"]), t(values_br), t(mask_br), cliprange_value=clip, loss_agg_mode=mode)
    (grad,) = torch.autograd.grad(loss, vpreds)
    out[f"vf.{i}.outputs"] = f32([loss, clipfrac])
    out[f"vf.{i}.grad_vpreds"] = f32(grad)

  # KL estimators: log-ratios up to +-30 to hit the k3 clamps; gradients of a weighted sum.
  kl_logp = (-3.0 * rng.random((B, R))).astype(np.float32)
  kl_ref = (kl_logp + rng.normal(size=(B, R))).astype(np.float32)
  kl_ref[0, :4] = kl_logp[0, :4] + [25.0, -25.0, 15.0, -30.0]
  out["kl.log_prob"], out["kl.ref_log_prob"] = kl_logp, kl_ref
  out["kl.weights"] = rng.normal(size=(B, R)).astype(np.float32)
  cases["kl"] = KL_KINDS
  for kind in KL_KINDS:
    logp, ref = t(kl_logp, grad=True), t(kl_ref, grad=True)
    kl = core_algos.kl_penalty(logp, ref, kind)
    g_logp, g_ref = torch.autograd.grad((kl * t(out["kl.weights"])).sum(), (logp, ref))
    out[f"kl.{kind}.value"], out[f"kl.{kind}.grad_log_prob"], out[f"kl.{kind}.grad_ref"] = (
        f32(kl), f32(g_logp), f32(g_ref))

  # Entropy and token log-probs from logits (float32 path of verl: gather - logsumexp).
  logits = (3.0 * rng.normal(size=(B, R, V))).astype(np.float32)
  labels = rng.integers(0, V, size=(B, R)).astype(np.int64)
  out["logits"], out["labels"] = logits, labels.astype(np.int32)
  out["entropy"] = f32(verl_F.entropy_from_logits(t(logits)))
  logits_t = t(logits, grad=True)
  logp = verl_F.logprobs_from_logits(logits_t, torch.from_numpy(labels))
  (grad,) = torch.autograd.grad((logp * t(out["kl.weights"])).sum(), logits_t)
  out["logprobs"], out["logprobs.grad_logits"] = f32(logp), f32(grad)

  out["cases"] = np.array(json.dumps(cases))
  np.savez_compressed(OUT, **out)
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
  main()
