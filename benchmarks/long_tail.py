r"""Packed vs padded RL step on a long-tail length distribution: the same data, one run.

  python -m benchmarks.long_tail --preset=tiny
  python -m benchmarks.long_tail --preset=small --prompts=16 --response_length=512

PPO with a GAE critic and an in-graph reward model (GRLO's step), one update a step, float32,
random weights (`models.init_model`). The workload is `benchmarks.common`'s: prompt lengths drawn
from the shipped GRLO prompts' Qwen3 chat-template lengths (`long_tail_prompts`), response
lengths made roughly geometric with mean `response_length / 6` by random stop ids
(`long_tail_stop_ids`: a random model's next token is near uniform, so each sampled token stops
its row with chance ~6 / response_length), capped at `response_length`. Both steps sample at
temperature 1 from the same key and weights, so their rollouts are identical; they differ only
in `actor.use_dynamic_bsz` (packed rows of `--row_len` tokens, default prompt + response length,
vs padded micro-batches of `--micro` responses). `--max_num_seqs=S` adds a third side, the
recipe's step: packed passes and the rollout engine over S slots (its rows draw other random
numbers, so its lengths differ a little; `speedup_recipe` = padded / recipe step time).

The JSON has, for each side, the median step seconds, the real tokens, and the FLOPs
(`rl.flops`: matrix products, causal) of its scoring and update passes as computed and of the
real tokens (`computed_over_useful`, the padding's cost); `speedup` = padded / packed step time.
`--rounds=K` then runs K rounds of one step of each side in turn and reports `rounds_s`, each
step's longest response (`rounds_longest_response`) and `speedup_rounds`, the median of the
rounds' padded / packed ratios (`speedup_recipe_rounds` likewise): the sides of a round run
seconds apart, so a slow spell of a shared machine does not fall on one side only.
`--phases` traces one more step a side and adds `phases_s`, its instructions' seconds by the
step's named phases (`benchmarks/phases.py`; the traced step runs its own rollout, so its
lengths may differ from the timed one's). `short_vs_long`: the packed step (one compiled
function) on a policy that stops at once and on one that never stops, to show the work
following the tokens.

`--tunix_python=PATH` (Tunix's venv, ../shared/peers.md) adds Tunix's PPO step on the same data as
a `tunix` side: the policy weights above exported to an HF folder, the same left-padded prompt ids,
every stop id a Tunix eos token, the same response cap, temperature 1, one sample a prompt, all
prompts one mini-batch, one update, no KL (ours has none: beta 0 skips Tunix's reference), GAE
lambda 1, lr 1e-6, a reward model forward (`benchmarks/tunix_rl_step.py --data`).
`speedup_vs_tunix` = Tunix / (recipe, else packed) step time. What still differs: Tunix's critic
and reward model are the policy's trunk with fresh 1-wide heads (ours are separate random models
of the same size); it samples with other random numbers, so other lengths from the same
distribution (its logits on the exported weights match ours to ~1e-6, but with few prompts the
batch's mean and longest response differ by chance: compare the sides' `response_length`); it
drops the stop token from a completion (`response_length_with_stop` counts it back, as ours does);
it runs an old-log-prob forward that ours skips at one update a step; and it scores and trains
padded [B, P + response_length] rows.
Prints one JSON line; logs go to stderr.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common, phases
from grlo_jax import allocator, models
from grlo_jax.rewards.reward_model import RMTemplate
from grlo_jax.rewards.score import make_reward_fn
from grlo_jax.rl import flops as rl_flops
from grlo_jax.rl import state as state_lib
from grlo_jax.rl.step import GraphDefs, Optimizers, RLConfig, jit_train_step, make_train_step
from grlo_jax.sampling import SamplingParams

PASSES = ("old_log_prob", "reference", "values", "reward_model", "update")


def _state(defs, policy, critic, rm, txs):
  return state_lib.place(state_lib.init_state(nnx.state(policy), txs.actor, nnx.state(critic), txs.critic,
                                              rm=nnx.state(rm)))


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _passes(counts: dict) -> int:
  return sum(counts[k] for k in PASSES)


def bench(a, cfg: RLConfig, step, st, batch, models_, template, p):
  """(the side's JSON, `run`: one more step of it, blocking)."""
  policy_cfg, critic_cfg, rm_cfg = models_
  box = {"st": st}

  def run():
    box["st"], box["m"] = step(box["st"], batch, jax.random.key(0))
    return jax.block_until_ready(box["m"])

  first, _ = common.timed(run, 1)
  sec, times = common.timed(run, a.repeats)
  m = jax.device_get(box["m"])
  by_phase = phases.seconds_by_phase(step, (box["st"], batch, jax.random.key(0)), run) if a.phases else None
  lp, lr = m["lengths/prompt_b"], m["lengths/response_b"]
  r = cfg.sampling.max_new_tokens
  useful, computed = rl_flops.measured_step_flops(cfg, policy_cfg, m, a.prompts, p, critic=critic_cfg, rm=rm_cfg,
                                                  rm_len=template.input_length(p, r),
                                                  rm_extra=len(template.turn_end_ids))
  ratios = rl_flops.flop_ratios(useful, computed)
  # How the FLOP model counted the rollout before the engine counted its own work: a static
  # decode of every row to the longest response.
  static = rl_flops.step_flops(cfg, policy_cfg, a.prompts, p, decode_tokens=int(lr.max()))["rollout"]
  return run, {"median_s": sec, "times_s": times, "compile_s": first - sec,
          "tokens": {"prompt": int(lp.sum()), "response": int(lr.sum()), "padded": a.prompts * (p + r)},
          "response_length": {"mean": float(lr.mean()), "max": int(lr.max()), "min": int(lr.min())},
          "passes_gflop": {"computed": _passes(computed) / 1e9, "useful": _passes(useful) / 1e9},
          "computed_over_useful": _passes(computed) / _passes(useful),
          "update_gflop": {"computed": computed["update"] / 1e9, "useful": useful["update"] / 1e9},
          "step_computed_over_useful": computed["total"] / useful["total"],
          "flop_ratios": {k.removeprefix("perf/"): v for k, v in ratios.items()},
          "rollout_flop_ratio_as_static_decode": static / useful["rollout"],
          **({"phases_s": by_phase} if by_phase else {}),
          **({"rows": float(m["perf/packed_rows"]), "rm_rows": float(m["perf/packed_rm_rows"])}
             if cfg.use_dynamic_bsz else {})}


def tunix_side(a, policy, ids, mask, stops) -> dict:
  """Tunix's PPO step (benchmarks/tunix_rl_step.py in its venv) on our policy weights, prompts and stops."""
  with tempfile.TemporaryDirectory() as tmp:
    models.export_hf(policy, pathlib.Path(tmp, "hf"))
    np.savez(pathlib.Path(tmp, "data.npz"), ids_bp=ids, mask_bp=mask, stop_ids=np.asarray(stops, np.int32))
    return common.run_peer(a.tunix_python, "tunix_rl_step.py", [
        f"--model={tmp}/hf", f"--data={tmp}/data.npz", "--algo=ppo", f"--repeats={a.repeats}",
        f"--new_tokens={a.response_length}", "--beta=0", "--lr=1e-6", "--gae_lambda=1", "--reward=model",
        f"--seed={a.seed}"])


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="tiny", choices=sorted(models.PRESETS))
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--response_length", type=int, default=384)
  ap.add_argument("--mean_length", type=float, default=None, help="default response_length / 6")
  ap.add_argument("--row_len", type=int, default=None, help="packed row tokens (default P + R)")
  ap.add_argument("--micro", type=int, default=8, help="padded micro-batch (responses)")
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--short_vs_long", type=int, default=1, help="0: skip the all-short / all-long pair")
  ap.add_argument("--max_num_seqs", type=int, default=0,
                  help="> 0: also time the recipe's step: packed passes and the rollout engine over this many slots")
  ap.add_argument("--tunix_python", default=None, help="Tunix venv's python: add Tunix's step on the same data")
  ap.add_argument("--rounds", type=int, default=0,
                  help="then this many interleaved rounds (one step of each side): median ratio per round")
  ap.add_argument("--sides", default="padded,packed,recipe",
                  help="which sides to run (recipe needs --max_num_seqs); speed-ups need padded")
  ap.add_argument("--phases", action="store_true",
                  help="trace one more step a side: seconds by phase (rollout, values, actor_update, ...)")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                  help="compute dtype (weights and optimizer state stay float32)")
  return ap


def run(a: argparse.Namespace) -> dict:
  """The benchmark's JSON for parsed `a` (`parser()`): what `main` prints."""
  base = models.preset(a.preset, param_dtype="float32", dtype=a.dtype)
  vocab = base.vocab_size
  policy = models.init_model(base, seed=0)
  critic = models.init_model(base.replace(head="value", num_labels=1), seed=1)
  rm = models.init_model(base.replace(head="score", num_labels=1), seed=2)
  defs = GraphDefs(actor=nnx.graphdef(policy), critic=nnx.graphdef(critic), rm=nnx.graphdef(rm))
  txs = Optimizers(actor=state_lib.make_optimizer(1e-6), critic=state_lib.make_optimizer(1e-6))
  ids, mask = common.long_tail_prompts(a.prompts, vocab - 2, a.seed)
  p, r = ids.shape[1], a.response_length
  stops = common.long_tail_stop_ids(vocab - 2, a.mean_length or r / 6, a.seed)
  template = RMTemplate(turn_end_ids=(vocab - 2, vocab - 1), pad_id=0, eos_ids=stops)
  batch = {"input_ids_bp": jnp.asarray(ids), "attention_mask_bp": jnp.asarray(mask)}
  cfg = RLConfig(sampling=SamplingParams(max_new_tokens=r, temperature=1.0, stop_token_ids=stops), n=1,
                 adv_estimator="gae", ppo_mini_batch_size=a.prompts, micro_batch_size=a.micro)
  row_len = a.row_len or p + r
  cfg_packed = dataclasses.replace(cfg, use_dynamic_bsz=True, ppo_max_token_len_per_device=row_len)
  reward_fn = make_reward_fn(defs.rm, template)
  st0 = _state(defs, policy, critic, rm, txs)
  cfgs = (base, critic.cfg, rm.cfg)

  out = {"bench": "long_tail", "preset": a.preset, "prompts": a.prompts, "prompt_len": p, "response_length": r,
         "mean_length_target": a.mean_length or r / 6, "stop_ids": len(stops), "row_len": row_len,
         "micro_batch_size": a.micro, "repeats": a.repeats, "algo": "ppo+critic+rm", "dtype": a.dtype,
         "device": jax.devices()[0].device_kind, **common.machine(), "git": common.git_rev()}
  configs = {"padded": cfg, "packed": cfg_packed}
  if a.max_num_seqs:
    configs["recipe"] = dataclasses.replace(
        cfg_packed, sampling=dataclasses.replace(cfg.sampling, max_num_seqs=a.max_num_seqs))
  configs = {k: v for k, v in configs.items() if k in a.sides.split(",")}
  sides, runs = {}, {}
  for name, c in configs.items():
    common.log(f"{name} ...")
    step = jit_train_step(make_train_step(c, defs, txs, reward_fn), None, st0, batch)
    runs[name], sides[name] = bench(a, c, step, _copy(st0), batch, cfgs, template, p)
    common.log(json.dumps(sides[name]))
    if name == "packed":
      packed_step = step
  out |= sides
  if "padded" in sides and "packed" in sides:
    out["speedup"] = sides["padded"]["median_s"] / sides["packed"]["median_s"]
  if "padded" in sides and "recipe" in sides:
    out["speedup_recipe"] = sides["padded"]["median_s"] / sides["recipe"]["median_s"]
  if a.rounds:
    # One more step of each side in turn, `rounds` times: the sides of a round run seconds apart
    # on the same step count (so the same rollout lengths), which a slow spell of the machine
    # cannot split; the speed-ups are the medians of the rounds' ratios.
    per = {name: [] for name in runs}
    longest = {name: [] for name in runs}
    for i in range(a.rounds):
      common.log(f"round {i + 1}/{a.rounds} ...")
      for name, run in runs.items():
        t0 = time.perf_counter()
        m = run()
        per[name].append(time.perf_counter() - t0)
        longest[name].append(int(m["response_length/max"]))
    out["rounds_s"], out["rounds_longest_response"] = per, longest
    ratios = lambda side: [x / y for x, y in zip(per["padded"], per[side])]
    out["speedup_rounds"] = statistics.median(ratios("packed"))
    if a.max_num_seqs:
      out["speedup_recipe_rounds"] = statistics.median(ratios("recipe"))

  # Work follows the tokens: the same compiled packed step on a policy that stops at once and on one
  # that never stops. Every embedding gets a large first coordinate, which then dominates the final
  # hidden state, and the stop ids' head rows weigh it by +-5: their logits are far above (below)
  # every other token's.
  timing = {}
  for name, sign in (("all_short", 1.0), ("all_long", -1.0)) if a.short_vs_long else ():
    st = _copy(st0)
    st.actor["embed_vd"].value = st.actor["embed_vd"].value.at[:, 0].set(100.0)
    st.actor["lm_head_dv"].value = st.actor["lm_head_dv"].value.at[0, jnp.asarray(stops)].set(5.0 * sign)
    box = {"st": st}

    def run():
      box["st"], box["m"] = packed_step(box["st"], batch, jax.random.key(0))
      jax.block_until_ready(box["m"])

    run()
    sec, _ = common.timed(run, a.repeats)
    timing[name] = {"median_s": sec, "response_length_mean": float(box["m"]["response_length/mean"]),
                    "rows": float(box["m"]["perf/packed_rows"])}
  if timing:
    timing["compiles"] = packed_step._cache_size()
    out["short_vs_long"] = timing
  if a.tunix_python:
    common.log("tunix ...")
    out["tunix"] = tunix_side(a, policy, ids, mask, stops)
    ours = sides.get("recipe", sides["packed"])["median_s"]
    if "median_s" in out["tunix"]:
      out["speedup_vs_tunix"] = out["tunix"]["median_s"] / ours
  return out


def main():
  allocator.reexec_with_tcmalloc()
  print(json.dumps(run(parser().parse_args())))


if __name__ == "__main__":
  main()
