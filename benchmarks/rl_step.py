r"""Full RL step throughput (rollout + scoring + update) of grlo_jax, side by side with Tunix.

  python -m benchmarks.rl_step --preset=tiny --algo=grpo [--tunix_python=/tmp/tunix_env/bin/python]
  python -m benchmarks.rl_step --preset=qwen3_0p6b --init=random --dtype=bfloat16 --algo=ppo \
      --reward=model --prompts=64 --peak_tflops=989   # on a GPU: policy + critic + RM, MFU

Shapes follow ../shared/peers.md: GRPO 2 prompts x 4 samples, PPO 8 prompts x 1 with a critic;
prompt 64, 128 new tokens at temperature 1 with no early stop; KL loss with beta 0.04 against a
reference copy; float32. Policy, reference and critic load the same random HF weights (the critic
with a new value head). --reward=model (GRLO's path): our step also runs a reward-model forward (a
score-head model of the same preset) inside the jit, which Tunix's reward function does not, so
the comparison counts that against us; --reward=rule: an in-graph 0/1 rule (parity of the
response's token sum), the same work as Tunix's random 0/1 Python reward. The rollout share is
the time of `generate` alone over the step's time. `--rounds=K` repeats the pair (ours, then Tunix)
K times; `speedup_vs_tunix` is then the median of the K ratios, and "grlo_jax" / "tunix" the first
round's figures.

`flops` counts the step's matrix products by phase (`grlo_jax.rl.flops`, causal attention:
model FLOPs); `tflop_per_s` divides them by the median step time and `mfu` by `--peak_tflops` too
(the chip's dense peak at --dtype, e.g. 989 for an H100 / H200 in bfloat16). `--init=random` draws
the weights (`models.init_model`) instead of saving and loading an HF folder: any preset, no torch,
no Tunix. Prints one JSON line; logs go to stderr.
"""

import argparse
import json
import pathlib
import statistics
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from grlo_jax import allocator, models
from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.score import make_reward_fn
from grlo_jax.rl import flops as rl_flops
from grlo_jax.rl import state as state_lib
from grlo_jax.rl.step import GraphDefs, Optimizers, RLConfig, jit_train_step, make_train_step
from grlo_jax.sampling import SamplingParams, generate_with_params

SHAPES = {"grpo": (2, 4), "ppo": (8, 1)}  # prompts, samples per prompt


def parity_reward(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll):
  return (jnp.sum(jnp.where(roll.mask, roll.tokens, 0), axis=1) % 2).astype(jnp.float32)


def load_models(path, preset, algo, dtype):
  """(policy, reference, reward model, critic or None): from the HF folder `path`, or drawn at
  random from `preset` when `path` is None."""
  if path is None:
    cfg = models.preset(preset, param_dtype=dtype, dtype=dtype)
    draw = lambda seed, **kw: models.init_model(cfg.replace(**kw), seed=seed)
    return (draw(0), draw(0), draw(1, head="score", num_labels=1),
            draw(0, head="value") if algo == "ppo" else None)
  load = lambda **kw: models.load_pretrained(path, dtype=dtype, **kw)
  return load(), load(), load(head="score", num_labels=1), load(head="value") if algo == "ppo" else None


def rl_config(algo: str, prompts: int, new_tokens: int, beta: float) -> RLConfig:
  """The benchmarked step: one update a step on one micro-batch, KL loss against the reference."""
  n = SHAPES[algo][1]
  sampling = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, stop_token_ids=())
  return RLConfig(sampling=sampling, n=n, adv_estimator="grpo" if algo == "grpo" else "gae",
                  ppo_mini_batch_size=prompts, micro_batch_size=prompts * n, use_kl_loss=True,
                  kl_loss_coef=beta, kl_loss_type="low_var_kl")


def bench_ours(path, preset, algo, prompts, prompt_len, new_tokens, repeats, beta, reward, dtype,
               peak_tflops):
  cfg = rl_config(algo, prompts, new_tokens, beta)
  n, sampling = cfg.n, cfg.sampling
  policy, ref, rm, critic = load_models(path, preset, algo, dtype)
  vocab = policy.cfg.vocab_size
  defs = GraphDefs(actor=nnx.graphdef(policy), critic=critic and nnx.graphdef(critic), rm=nnx.graphdef(rm))
  txs = Optimizers(actor=state_lib.make_optimizer(1e-5), critic=state_lib.make_optimizer(1e-5))
  st = state_lib.place(state_lib.init_state(nnx.state(policy), txs.actor, critic and nnx.state(critic),
                                            txs.critic, rm=nnx.state(rm), ref=nnx.state(ref)))
  template = RMTemplate(turn_end_ids=(vocab - 2, vocab - 1), pad_id=0, eos_ids=())
  ids = np.random.default_rng(0).integers(1, vocab - 2, size=(prompts, prompt_len)).astype(np.int32)
  batch = {"input_ids_bp": jnp.asarray(ids), "attention_mask_bp": jnp.ones_like(jnp.asarray(ids))}
  reward_fn = make_reward_fn(defs.rm, template) if reward == "model" else parity_reward
  step = jit_train_step(make_train_step(cfg, defs, txs, reward_fn), None, st, batch)

  box = {"st": st}

  def run():
    box["st"], box["m"] = step(box["st"], batch, jax.random.key(0))
    jax.block_until_ready(box["m"])

  first, _ = common.timed(run, 1)
  sec, times = common.timed(run, repeats)
  tokens = float(box["m"]["tokens/total"])
  counts = rl_flops.step_flops(cfg, policy.cfg, prompts, prompt_len, critic=critic and critic.cfg,
                               rm=rm.cfg if reward == "model" else None,
                               rm_len=template.input_length(prompt_len, new_tokens))
  tflop_s = counts["total"] / sec / 1e12

  roll = jax.jit(lambda s, i, m, r: generate_with_params(nnx.merge(defs.actor, s), i, m, r, sampling))
  rep_ids = jnp.repeat(batch["input_ids_bp"], n, 0)
  rep_mask = jnp.ones_like(rep_ids)
  jax.block_until_ready(roll(box["st"].actor, rep_ids, rep_mask, jax.random.key(0)))
  roll_sec, _ = common.timed(lambda: jax.block_until_ready(
      roll(box["st"].actor, rep_ids, rep_mask, jax.random.key(0))), repeats)
  return {"median_s": sec, "times_s": times, "compile_s": first - sec, "tokens_per_step": tokens,
          "tok_per_s": tokens / sec, "rollout_s": roll_sec, "flops": counts, "tflop_per_s": tflop_s,
          "mfu": tflop_s / peak_tflops if peak_tflops else None, "share": {
              "rollout": roll_sec / sec, "scoring_and_update": 1 - roll_sec / sec}}


def main():
  allocator.reexec_with_tcmalloc()  # the peers' subprocesses inherit it: same allocator for all
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="tiny", choices=sorted(models.PRESETS))
  ap.add_argument("--algo", default="grpo", choices=sorted(SHAPES))
  ap.add_argument("--prompts", type=int, default=None, help="prompts a step (default: the algo's, as peers.md)")
  ap.add_argument("--init", default="hf", choices=["hf", "random"],
                  help="hf: random transformers weights saved and loaded (what Tunix loads too)")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--peak_tflops", type=float, default=None, help="the device's dense peak, for mfu")
  ap.add_argument("--prompt_len", type=int, default=64)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--beta", type=float, default=0.04)
  ap.add_argument("--reward", default="model", choices=["model", "rule"])
  ap.add_argument("--tunix_python", default=None)
  ap.add_argument("--rounds", type=int, default=1,
                  help="ours then Tunix, this many times: on a noisy machine the median of the rounds' "
                       "ratios is steadier than one")
  a = ap.parse_args()
  if a.init == "random" and a.tunix_python:
    ap.error("--tunix_python needs --init=hf: Tunix loads the same HF weights")
  prompts = a.prompts or SHAPES[a.algo][0]
  with tempfile.TemporaryDirectory() as tmp:
    path = common.save_hf_preset(a.preset, pathlib.Path(tmp)) if a.init == "hf" else None
    result = {"bench": "rl_step", "preset": a.preset, "algo": a.algo, "prompts_x_samples": [prompts, SHAPES[a.algo][1]],
              "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "repeats": a.repeats, "reward": a.reward,
              "init": a.init, "dtype": a.dtype, "peak_tflops": a.peak_tflops,
              "device": jax.devices()[0].device_kind, **common.machine(), "git": common.git_rev()}
    rounds = []
    for i in range(a.rounds):
      common.log(f"round {i + 1}/{a.rounds}: grlo_jax ...")
      ours = bench_ours(path, a.preset, a.algo, prompts, a.prompt_len, a.new_tokens, a.repeats, a.beta,
                        a.reward, a.dtype, a.peak_tflops)
      rounds.append({"grlo_jax": ours})
      if a.tunix_python:
        common.log(f"round {i + 1}/{a.rounds}: tunix ...")
        rounds[-1]["tunix"] = common.run_peer(a.tunix_python, "tunix_rl_step.py", [
            f"--model={path}", f"--algo={a.algo}", f"--repeats={a.repeats}", f"--prompt_len={a.prompt_len}",
            f"--new_tokens={a.new_tokens}", f"--beta={a.beta}"])
    result |= rounds[0]
    ratios = [r["tunix"]["median_s"] / r["grlo_jax"]["median_s"] for r in rounds if "median_s" in r.get("tunix", {})]
    if ratios:
      result["speedup_vs_tunix"] = statistics.median(ratios)
    if a.rounds > 1:
      result["rounds"] = [{"grlo_jax_s": r["grlo_jax"]["median_s"], "tunix_s": r.get("tunix", {}).get("median_s")}
                          for r in rounds]
      result["speedups_vs_tunix"] = ratios
  print(json.dumps(result))


if __name__ == "__main__":
  main()
