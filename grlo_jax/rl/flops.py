"""Matrix-product FLOPs of one RL step, by phase: the numerator of the step's TFLOP/s and MFU.

Counts the passes `rl.step` runs over the shapes it computes, padding included: the rollout
(prefill + decode steps), the old log-probs' forward unless the update's own are reused, the
reference forward, the critic's values, the reward model, then `ppo_epochs` x (actor forward +
backward, critic forward + backward) over every response. Remat's recomputation is not counted
(model FLOPs); attention counts each query's visible keys unless `causal=False`.
"""

from __future__ import annotations

from grlo_jax.models.config import ModelConfig
from grlo_jax.models.flops import attention_flops, forward_flops, generate_flops, head_weights, layer_weights
from grlo_jax.rl.config import RLConfig


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


def measured_step_flops(cfg: RLConfig, actor: ModelConfig, m: dict, prompts: int, prompt_width: int, *,
                        critic: ModelConfig | None = None, rm: ModelConfig | None = None, rm_len: int = 0,
                        rm_extra: int = 0, causal: bool = True) -> tuple[dict[str, int], dict[str, int]]:
  """(useful, computed) FLOPs by phase of one step, from its metrics `m` (host values): the real
  lengths (`lengths/*`) give the useful ones; the computed ones are the packed rows the passes ran
  (`perf/packed_*`) or the padded shapes, and the rollout's own counts (`rollout/*`,
  `rollout_flops`). The RM scores `rm_len` tokens a padded row, `rm_extra` more than prompt +
  response a real one."""
  useful = useful_step_flops(cfg, actor, m["lengths/prompt_b"], m["lengths/response_b"], critic=critic, rm=rm,
                             rm_extra=rm_extra, causal=causal)
  p, r = prompt_width, cfg.sampling.max_new_tokens
  kw = dict(critic=critic, rm=rm, decode_tokens=int(max(m["lengths/response_b"])), causal=causal)
  if cfg.use_dynamic_bsz:
    row_len = cfg.ppo_max_token_len_per_device
    computed = packed_step_flops(cfg, actor, prompts, p, float(m["perf/packed_rows"]), row_len,
                                 head_positions=float(m["perf/packed_head_positions"]),
                                 rm_rows=float(m.get("perf/packed_rm_rows", 0.0)),
                                 rm_row_len=row_len + rm_len - (p + r), **kw)
  else:
    computed = step_flops(cfg, actor, prompts, p, rm_len=rm_len, **kw)
  computed["rollout"] = rollout_flops(actor, m)
  computed["total"] = sum(v for k, v in computed.items() if k != "total")
  return useful, computed


def rollout_flops(actor: ModelConfig, counts: dict) -> int:
  """FLOPs the rollout computed, from its own counts (the step's `rollout/*` metrics,
  `rollout.RolloutStats`): every prefilled and decoded position through the layers, the
  attention's query-key pairs, the head at each prefilled row's last token and every decode row."""
  c = {k: float(counts[k]) for k in ("rollout/prefill_tokens", "rollout/row_steps", "rollout/prefill_rows",
                                      "rollout/prefill_pairs", "rollout/decode_pairs")}
  positions = c["rollout/prefill_tokens"] + c["rollout/row_steps"]
  heads = c["rollout/prefill_rows"] + c["rollout/row_steps"]
  pairs = c["rollout/prefill_pairs"] + c["rollout/decode_pairs"]
  return int(2 * positions * layer_weights(actor) * actor.num_layers + attention_flops(actor, 1, pairs)
             + 2 * heads * head_weights(actor))


def flop_ratios(useful: dict[str, int], computed: dict[str, int]) -> dict[str, float]:
  """Computed / useful FLOPs: the whole step, the rollout, and the scoring + update passes."""
  passes = lambda d: d["total"] - d["rollout"]
  ratio = lambda a, b: a / b if b else 0.0
  return {"perf/computed_flop_ratio": ratio(computed["total"], useful["total"]),
          "perf/rollout_flop_ratio": ratio(computed["rollout"], useful["rollout"]),
          "perf/passes_flop_ratio": ratio(passes(computed), passes(useful))}
