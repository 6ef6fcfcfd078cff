"""Reward-model win rate against AlpacaEval's reference outputs.

This is a PROXY for AlpacaEval 2's length-controlled (LC) win rate, not that number. The real
one needs its GPT-4 Turbo judge (`weighted_alpaca_eval_gpt4_turbo`) and a length-debiasing
regression, neither of which runs offline. Here a local scorer, e.g. the reward model,
rates each response and the reference (`gpt4_1106_preview`) for the same instruction. No
length control is applied: report the mean lengths next to it.
"""

import math
from typing import Callable, Sequence

from grlo_jax.eval import benchmarks

PROXY_NOTE = ("reward-model win rate vs AlpacaEval 2.0 reference outputs (gpt4_1106_preview); "
              "a proxy, not AlpacaEval 2 LC win rate")


def win_rate(items: Sequence[benchmarks.Item], responses: Sequence[str],
             score: Callable[[str, str], float]) -> dict:
  """Scores each (instruction, response) and (instruction, reference) with `score`.

  Returns win_rate (ties count half), bt_win_rate (mean sigmoid of the score difference, the
  Bradley-Terry preference probability), n, mean lengths in characters, and the proxy note.
  """
  if len(items) != len(responses):
    raise ValueError(f"{len(items)} items but {len(responses)} responses")
  if not items:
    raise ValueError("no items to compare")
  wins, probs = [], []
  for item, response in zip(items, responses):
    instruction = item.messages[0]["content"]
    delta = float(score(instruction, response)) - float(score(instruction, item.answer))
    wins.append(1.0 if delta > 0 else 0.5 if delta == 0 else 0.0)
    probs.append(1.0 / (1.0 + math.exp(-max(min(delta, 50.0), -50.0))))
  n = len(items)
  return {
      "win_rate": sum(wins) / n,
      "bt_win_rate": sum(probs) / n,
      "n": n,
      "mean_response_chars": sum(len(r) for r in responses) / n,
      "mean_reference_chars": sum(len(i.answer) for i in items) / n,
      "proxy": PROXY_NOTE,
  }
