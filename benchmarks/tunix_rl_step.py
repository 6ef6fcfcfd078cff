r"""Tunix (google-tunix 0.1.7) RL step time (GRPO or PPO) on an HF Qwen3 folder. Runs in Tunix's own venv.

  /tmp/tunix_env/bin/python benchmarks/tunix_rl_step.py --model=HF_DIR --algo=grpo --repeats=3
  /tmp/tunix_env/bin/python benchmarks/tunix_rl_step.py --model=HF_DIR --algo=ppo --repeats=3
  /tmp/tunix_env/bin/python benchmarks/tunix_rl_step.py --model=HF_DIR --algo=ppo --data=PROMPTS.npz \
      --new_tokens=384 --beta=0 --lr=1e-6 --gae_lambda=1 --reward=model   # benchmarks/long_tail.py's

One step = rollout + old-policy, reference (none at --beta=0) (and for PPO critic) forward passes +
advantages + one policy update (+ one critic update for PPO), driven by Tunix's own `GRPOLearner` /
`PPOLearner` and `RLCluster` with the vanilla rollout engine, every role colocated on one Auto-axis
mesh, float32, the whole batch one mini-batch.
  grpo: 2 prompts x 4 samples (num_generations 4), beta 0.04, no critic.
  ppo:  8 prompts x 1 sample, beta 0.04, critic = the same weights with lm_head swapped for a 1-wide
        value head.
Prompts are random ids (never the pad id) of --prompt_len tokens, fed through the id-string
tokenizer of tunix_sampler.py; temperature 1.0, top_p 1.0, no top-k, an eos id that cannot be
sampled (no early stop), --new_tokens per completion. Reward: random 0/1 per completion (integer
valued on purpose: PPOLearner stores token rewards in an int32 tensor and truncates fractions).

--data=FILE.npz (benchmarks/long_tail.py writes it): the prompts and stops of a given workload instead.
`ids_bp` [B, P] int32 left-padded with the pad id and `mask_bp` [B, P]: each row's real ids go in as
its prompt with max_prompt_length P, so Tunix left-pads them back to exactly `ids_bp` (checked);
B prompts a step, --algo's samples each. `stop_ids`: every one is a Tunix eos token
(`RolloutConfig.eos_tokens` is a list; the sampler stops a row at the first of any, `jnp.isin`).
Tunix drops that stop token from the completion (it scores and trains on the tokens before it), so
`response_length` counts Tunix's completion tokens and `response_length_with_stop` adds the stop
token back for the rows that stopped (length < --new_tokens), as a step that keeps it counts.
The rollout seed is --seed + step (the prompts repeat; a fixed seed would repeat one draw).
--reward=model scores with a reward model (the policy weights with a fresh [D, 1] head, like the
critic; Tunix reads its score at the last completion token) instead of the random 0/1; its
fractional scores are truncated to integers by that int32 tensor, which changes no timing.

Timing: the learner pulls one batch from the dataset at the start of every step, so a step's time is
the gap between consecutive pulls (the last one ends when the learner calls `RLCluster.close`). The
first (warm-up, compiling) step is reported as `first_step_s` and left out of the median. Logs go to
stderr; the last stdout line is one JSON object. Must not import grlo_jax.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tunix_sampler as ts  # noqa: E402  (the id tokenizer, config, mesh and loader)

from tunix.models.qwen3 import model as qwen3_model  # noqa: E402
from tunix.rl import rl_cluster as rl_cluster_lib  # noqa: E402
from tunix.rl.grpo import grpo_learner  # noqa: E402
from tunix.rl.ppo import ppo_learner  # noqa: E402
from tunix.rl.rollout import base_rollout  # noqa: E402

log = ts.log


def value_head_critic(hf_dir, mesh, cfg, seed=1):
  """The policy weights with lm_head replaced by a [D, 1] head: Tunix's critic (and reward model)
  must return per-token scores of shape [B, T, 1] (common.compute_score squeezes the last axis)."""
  critic, _ = ts.load_model(hf_dir, mesh)
  critic.lm_head = qwen3_model.Einsum(
      einsum_str="BTD,DV->BTV", shape=(cfg.embed_dim, 1), rngs=nnx.Rngs(params=seed),
      sharding=cfg.shd_config.emb_dv, dtype=jnp.float32, param_dtype=jnp.float32)
  # Put the new head on the mesh like the loaded weights.
  state = nnx.state(critic)
  specs = nnx.get_partition_spec(state)
  nnx.update(critic, jax.tree.map(
      lambda x, s: jax.device_put(x, jax.sharding.NamedSharding(mesh, s or jax.sharding.PartitionSpec())),
      state, specs))
  return critic


def _stats(x) -> dict:
  return {"mean": float(np.mean(x)), "min": int(np.min(x)), "max": int(np.max(x))}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True, help="HF Qwen3 folder (config.json + *.safetensors)")
  ap.add_argument("--algo", default="grpo", choices=["grpo", "ppo"])
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--prompt_len", type=int, default=64)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--beta", type=float, default=0.04)
  ap.add_argument("--lr", type=float, default=1e-5)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--data", default=None, help=".npz of ids_bp, mask_bp (left-padded prompts) and stop_ids")
  ap.add_argument("--reward", default="random", choices=["random", "model"])
  ap.add_argument("--gae_lambda", type=float, default=0.95, help="PPO's GAE lambda (Tunix's default)")
  a = ap.parse_args()

  hf_dir = pathlib.Path(a.model)
  n_prompts, n_samples = (2, 4) if a.algo == "grpo" else (8, 1)
  pad_id = int(json.loads((hf_dir / "config.json").read_text()).get("pad_token_id") or 0)
  data = np.load(a.data) if a.data else None
  if data is not None:
    ids_bp, mask_bp = data["ids_bp"].astype(np.int32), data["mask_bp"].astype(bool)
    if (ids_bp[mask_bp] == pad_id).any() or (ids_bp[~mask_bp] != pad_id).any():
      raise SystemExit(f"--data: real prompt ids must differ from the pad id {pad_id}, padding must equal it")
    n_prompts, a.prompt_len = ids_bp.shape
    stop_ids = [int(i) for i in data["stop_ids"]]
  mesh = ts.auto_mesh()

  with jax.set_mesh(mesh):
    actor, cfg = ts.load_model(hf_dir, mesh)
    reference = ts.load_model(hf_dir, mesh)[0] if a.beta else None  # beta 0: Tunix skips it
    critic = value_head_critic(hf_dir, mesh, cfg) if a.algo == "ppo" else None
    reward_model = value_head_critic(hf_dir, mesh, cfg, seed=2) if a.reward == "model" else None
    eos_ids = stop_ids if data is not None else [cfg.vocab_size]  # vocab_size cannot be sampled: no early stop
    tok = ts.IdTokenizer(pad=pad_id, eos=eos_ids[0])

    rollout_config = base_rollout.RolloutConfig(
        max_tokens_to_generate=a.new_tokens, max_prompt_length=a.prompt_len,
        kv_cache_size=a.prompt_len + a.new_tokens, temperature=1.0, top_p=1.0, top_k=None,
        seed=a.seed,  # must be an int: a JAX key is donated and deleted after the first rollout
        eos_tokens=eos_ids, data_type=jnp.float32)
    n_steps = 1 + a.repeats
    training_config = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.adamw(a.lr),
        critic_optimizer=optax.adamw(a.lr) if a.algo == "ppo" else None,
        eval_every_n_steps=10**9, max_steps=n_steps, pbar_description=None)
    cluster = rl_cluster_lib.RLCluster(
        actor=actor, reference=reference, critic=critic, reward=reward_model, tokenizer=tok,
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={r: mesh for r in rl_cluster_lib.Role},  # colocated
            rollout_engine="vanilla", offload_to_cpu=False, training_config=training_config,
            rollout_config=rollout_config))

    rng = np.random.default_rng(a.seed)

    def reward_fn(prompts, completions, **_):
      return [float(r) for r in rng.integers(0, 2, size=len(completions))]  # integer-valued

    reward_fns = reward_fn if a.reward == "random" else None
    lengths, counted = [], []  # per step: generated tokens a completion; prompt + generated tokens
    generate = cluster.generate

    def recorded_generate(*args, **kw):
      out = generate(*args, **kw)
      padded = np.asarray(out.left_padded_prompt_tokens)
      if data is not None and not (padded == np.repeat(ids_bp, n_samples, 0)).all():
        raise SystemExit("Tunix's padded prompts differ from --data's ids_bp")
      lengths.append([len(t) for t in out.tokens])
      counted.append(int((padded != pad_id).sum()) + sum(lengths[-1]))
      return out

    cluster.generate = recorded_generate

    if a.algo == "grpo":
      learner = grpo_learner.GRPOLearner(
          rl_cluster=cluster, reward_fns=reward_fns,
          algo_config=grpo_learner.GRPOConfig(num_generations=n_samples, num_iterations=1,
                                              beta=a.beta))
    else:
      learner = ppo_learner.PPOLearner(
          rl_cluster=cluster, reward_fns=reward_fns,
          ppo_config=ppo_learner.PPOConfig(num_iterations=1, beta=a.beta, gae_lambda=a.gae_lambda))

    stamps = []
    data_rng = np.random.default_rng(a.seed + 1)

    def dataset():
      for i in range(n_steps):
        if data is not None:
          prompts = ts.ids_to_strings([row[m] for row, m in zip(ids_bp, mask_bp)])
          rollout_config.seed = a.seed + i  # the same prompts each step: a fixed seed would repeat one draw
        else:
          ids = data_rng.integers(1, cfg.vocab_size, size=(n_prompts, a.prompt_len))
          ids[ids == pad_id] = 1 if pad_id != 1 else 2
          prompts = ts.ids_to_strings(ids)
        stamps.append(time.perf_counter())
        yield {"prompts": np.array(prompts)}  # a NumPy array of strings, not a list

    close = cluster.close

    def stamped_close():
      stamps.append(time.perf_counter())
      close()

    cluster.close = stamped_close
    log(f"tunix {a.algo}: {n_prompts} prompts x {n_samples} samples, P={a.prompt_len} "
        f"N={a.new_tokens}, beta={a.beta}, {len(eos_ids)} eos ids, reward {a.reward}, {n_steps} steps (1 warm-up)")
    t0 = time.perf_counter()
    learner.train(dataset())
    total = time.perf_counter() - t0

  steps = [b - s for s, b in zip(stamps, stamps[1:])]
  if len(steps) != n_steps or len(counted) != n_steps:
    raise SystemExit(f"expected {n_steps} steps, timed {len(steps)}, rolled out {len(counted)}")
  times = steps[1:]
  timed_lengths = np.concatenate([np.asarray(l) for l in lengths[1:]])
  sec = statistics.median(times)
  tokens = counted[-1]
  expected = n_prompts * n_samples * (a.prompt_len + a.new_tokens)
  log(f"steps {[round(s, 3) for s in steps]}, tokens/step {counted}, total {total:.1f}s")
  if tokens != expected and data is None:
    log(f"warning: {tokens} tokens per step, {expected} expected (an early stop or a pad-id token)")
  print(json.dumps({"algo": a.algo, "median_s": sec, "times_s": times, "first_step_s": steps[0],
                    "compile_s": steps[0] - sec, "tokens": tokens, "tokens_per_step": counted,
                    "tok_per_s": tokens / sec, "prompts": n_prompts, "samples": n_samples,
                    "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "beta": a.beta,
                    "reward": a.reward, "gae_lambda": a.gae_lambda, "eos_ids": len(eos_ids),
                    "response_length": _stats(timed_lengths),
                    "response_length_with_stop": _stats(timed_lengths + (timed_lengths < a.new_tokens)),
                    "response_length_mean_by_step": [float(np.mean(l)) for l in lengths],
                    "actor_train_steps": int(cluster.actor_trainer.train_steps),
                    "critic_train_steps": (int(cluster.critic_trainer.train_steps)
                                           if a.algo == "ppo" else None),
                    "tunix_version": ts._version(), "jax_version": jax.__version__,
                    "device": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  main()
