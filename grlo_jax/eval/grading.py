"""Grade completions against benchmark items, and aggregate: accuracy and unbiased pass@k."""

import concurrent.futures
import dataclasses
import math
import re
from typing import Mapping, Sequence

import numpy as np

from grlo_jax.eval import benchmarks
from grlo_jax.rewards.verifiers import choice
from grlo_jax.rewards.verifiers import code
from grlo_jax.rewards.verifiers import math as math_verifier
from grlo_jax.rewards.verifiers import sandbox

SANDBOX_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class Grade:
  """correct, and what was read from the completion: the final answer (math), the letter
  (multiple choice), or the sandbox status (code)."""
  correct: bool
  extracted: str | None


def strip_think(completion: str) -> str:
  """Drops a `<think>...</think>` preamble: only what follows it is the answer."""
  return re.sub(r"^.*?</think>", "", completion, count=1, flags=re.DOTALL)


def _program(item: benchmarks.Item, completion: str) -> str:
  t = item.tests
  if item.benchmark == "humaneval":
    return code.humaneval_program(t["prompt"], completion, t["test"], t["entry_point"])
  return code.mbpp_program(completion, t["test_list"], t["test_setup_code"])


def grade_many(benchmark: str, items: Sequence[benchmarks.Item], completions: Sequence[str],
               limits: sandbox.Limits = sandbox.Limits(),
               max_workers: int = SANDBOX_WORKERS, family: str | None = None) -> list[Grade]:
  """Grades `completions[i]` against `items[i]`; code runs `max_workers` sandboxes at a time.

  `family` (default: the benchmark's kind) names the grader, for items of no registered
  benchmark (`eval.records`: prompt records with a ground truth are graded as math).
  """
  if len(items) != len(completions):
    raise ValueError(f"{len(items)} items but {len(completions)} completions")
  family = family or benchmarks.kind(benchmark)
  completions = [strip_think(c) for c in completions]
  if family == "math":
    def grade_one(item: benchmarks.Item, c: str) -> Grade:
      answer = math_verifier.extract_answer(c)
      return Grade(math_verifier.answers_match(answer, item.answer), answer)
    # Threads only wait on the SymPy worker processes, so this keeps all of them busy.
    with concurrent.futures.ThreadPoolExecutor(math_verifier.WORKERS) as pool:
      return list(pool.map(grade_one, items, completions))
  if family == "choice":
    letters = [choice.extract_letter(c) for c in completions]
    return [Grade(l == item.answer, l) for item, l in zip(items, letters)]
  if family in ("humaneval", "mbpp"):
    programs = [_program(item, c) for item, c in zip(items, completions)]
    results = sandbox.run_many(programs, limits, max_workers)
    return [Grade(r.passed, r.status) for r in results]
  raise ValueError(f"{benchmark} is judged by a reward model, not graded: see eval.win_rate")


def grade(benchmark: str, item: benchmarks.Item, completion: str) -> bool:
  """Whether `completion` answers `item` correctly."""
  return grade_many(benchmark, [item], [completion])[0].correct


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021, the Codex paper)."""
  if k > n:
    raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def aggregate(correct_by_item: Mapping[str, Sequence[bool]], ks: Sequence[int] = (1,)) -> dict:
  """accuracy (mean per-item fraction correct), n (items), samples, and pass@k for each k that
  every item has samples for."""
  per_item = [list(v) for v in correct_by_item.values()]
  if not per_item or any(not v for v in per_item):
    raise ValueError("every item needs at least one graded sample")
  min_n = min(len(v) for v in per_item)
  summary = {
      "accuracy": float(np.mean([sum(v) / len(v) for v in per_item])),
      "n": len(per_item),
      "samples": sum(len(v) for v in per_item),
  }
  for k in ks:
    if k <= min_n:
      summary[f"pass@{k}"] = float(np.mean([pass_at_k(len(v), sum(v), k) for v in per_item]))
  return summary


def default_ks(min_samples: int) -> tuple[int, ...]:
  """1, 2, 4, ... up to the smallest per-item sample count."""
  return tuple(2**i for i in range(int(math.log2(max(min_samples, 1))) + 1))
