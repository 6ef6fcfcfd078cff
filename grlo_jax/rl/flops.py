"""Matrix-product FLOPs of one RL step, by phase: the numerator of the step's TFLOP/s and MFU.

Counts the passes `rl.step` runs over the shapes it computes, padding included: the rollout
(prefill + decode steps), the old log-probs' forward unless the update's own are reused, the
reference forward, the critic's values, the reward model, then `ppo_epochs` x (actor forward +
backward, critic forward + backward) over every response. Remat's recomputation is not counted
(model FLOPs); attention counts each query's visible keys unless `causal=False`.
"""

from __future__ import annotations

from grlo_jax.models.config import ModelConfig
from grlo_jax.models.flops import forward_flops, generate_flops, head_weights
from grlo_jax.rl.step import RLConfig


def step_flops(cfg: RLConfig, actor: ModelConfig, prompts: int, prompt_len: int, *,
               critic: ModelConfig | None = None, rm: ModelConfig | None = None, rm_len: int = 0,
               decode_tokens: int | None = None, causal: bool = True) -> dict[str, int]:
  """FLOPs by phase and their "total" for `prompts` prompts of `prompt_len` tokens.

  Args:
    cfg: the step's knobs; responses are `cfg.sampling.max_new_tokens` long (the update's shapes).
    actor: the policy's config (the reference shares it).
    critic: the critic's config; counted when `cfg` uses one.
    rm: the reward model's config, scoring inputs of `rm_len` tokens; None: no reward-model forward.
    decode_tokens: tokens the rollout generated (default all; fewer when every row stopped early).
  """
  rows = prompts * cfg.n
  r = cfg.sampling.max_new_tokens
  t = prompt_len + r
  policy_fwd = forward_flops(actor, rows, t, r, causal=causal)
  critic_fwd = forward_flops(critic, rows, t, causal=causal) if cfg.uses_critic and critic else 0
  out = {
      "rollout": generate_flops(actor, rows, prompt_len, r if decode_tokens is None else max(decode_tokens, 1),
                                causal=causal),
      "old_log_prob": 0 if cfg.reuses_update_log_probs(rows) else policy_fwd,
      "reference": policy_fwd if cfg.uses_ref else 0,
      "values": critic_fwd,
      "reward_model": forward_flops(rm, rows, rm_len, causal=causal) if rm is not None else 0,
      "update": cfg.ppo_epochs * 3 * (policy_fwd + critic_fwd),
  }
  return out | {"total": sum(out.values())}


def useful_step_flops(cfg: RLConfig, actor: ModelConfig, prompt_len_b, response_len_b, *,
                      critic: ModelConfig | None = None, rm: ModelConfig | None = None,
                      rm_extra: int = 0, causal: bool = True) -> dict[str, int]:
  """FLOPs by phase of the sequences' own lengths (verl's MFU convention): what the step must
  compute, whatever its padding. `prompt_len_b`, `response_len_b`: each response's real prompt
  and response lengths (NumPy int arrays [B]); the RM scores prompt + response + `rm_extra`
  tokens. The policy's head counts the response positions only (the ones a log-prob needs)."""
  import numpy as np  # lazy: the module's other users need no NumPy

  lp = np.asarray(prompt_len_b, np.int64)
  lr = np.asarray(response_len_b, np.int64)
  t = lp + lr
  fwd = lambda m, seq, head=None: int(np.sum(forward_flops(m, 1, seq, head, causal=causal)))
  policy_fwd = fwd(actor, t, lr)
  critic_fwd = fwd(critic, t) if cfg.uses_critic and critic else 0
  out = {
      "rollout": int(np.sum(np.where(lr > 0, generate_flops(actor, 1, lp, np.maximum(lr, 1), causal=causal), 0))),
      "old_log_prob": 0 if cfg.reuses_update_log_probs(len(lp)) else policy_fwd,
      "reference": policy_fwd if cfg.uses_ref else 0,
      "values": critic_fwd,
      "reward_model": fwd(rm, t + rm_extra) if rm is not None else 0,
      "update": cfg.ppo_epochs * 3 * (policy_fwd + critic_fwd),
  }
  return out | {"total": sum(out.values())}


def packed_step_flops(cfg: RLConfig, actor: ModelConfig, prompts: int, prompt_len: int, rows: float,
                      row_len: int, *, head_positions: float | None = None, critic: ModelConfig | None = None,
                      rm: ModelConfig | None = None, rm_rows: float = 0, rm_row_len: int = 0,
                      decode_tokens: int | None = None, causal: bool = True) -> dict[str, int]:
  """`step_flops` of a packed step (`actor.use_dynamic_bsz`): the passes compute `rows` rows of
  `row_len` tokens each (the step's `perf/packed_rows`), the policy's LM head at `head_positions`
  (`perf/packed_head_positions`; default every position), the reward model `rm_rows` rows of
  `rm_row_len`; the rollout as `step_flops`. A row is counted as one causal sequence of its
  length (what a kernel that skips blocks above the diagonal computes)."""
  out = step_flops(cfg, actor, prompts, prompt_len, critic=critic, decode_tokens=decode_tokens, causal=causal)
  head_positions = rows * row_len if head_positions is None else head_positions
  policy_fwd = int(rows * forward_flops(actor, 1, row_len, 0, causal=causal)
                   + 2 * head_positions * head_weights(actor))
  critic_fwd = int(rows * forward_flops(critic, 1, row_len, causal=causal)) if cfg.uses_critic and critic else 0
  out |= {
      "old_log_prob": 0 if cfg.reuses_update_log_probs(prompts * cfg.n) else policy_fwd,
      "reference": policy_fwd if cfg.uses_ref else 0,
      "values": critic_fwd,
      "reward_model": int(rm_rows * forward_flops(rm, 1, rm_row_len, causal=causal)) if rm is not None else 0,
      "update": cfg.ppo_epochs * 3 * (policy_fwd + critic_fwd),
  }
  out.pop("total")
  return out | {"total": sum(out.values())}
