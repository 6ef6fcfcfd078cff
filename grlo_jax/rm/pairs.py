"""Preference pairs from a model's own samples, ranked by a verifier (`launch/make_pairs.py`).

For each prompt the model's k samples are graded against the ground truth and sorted into
kinds: "correct"; and three kinds of wrong ones: "truncated" (cut at the token limit, its last
number not the truth), "wrong_answer" (ended with an answer that is not the truth) and
"no_answer" (ended without any answer the verifier can extract). A pair is (a correct sample, a wrong
one): one pair per wrong kind found, each prompt contributing at most `max_pairs_per_prompt`,
so the kinds mix as they occur in the model's outputs. Prompts with no correct sample or no
wrong one make no pair (counted). Records are `{"prompt", "chosen", "rejected", "extra_info"}`
with strings: the common preference layout that `data.preferences` reads.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

WRONG_KINDS = ("wrong_answer", "no_answer", "truncated")


@dataclasses.dataclass(frozen=True)
class Sample:
  """One completion: its text, whether it hit the token limit, the extracted answer (None: none)."""

  text: str
  truncated: bool
  answer: str | None
  correct: bool


def kind(s: Sample) -> str:
  """"correct", or which kind of wrong (`WRONG_KINDS`)."""
  if s.correct:
    return "correct"
  if s.truncated:  # cut at the limit: whatever number the verifier found was not a final answer
    return "truncated"
  return "wrong_answer" if s.answer is not None else "no_answer"


def mine_pairs(prompts: Sequence[str], samples: Sequence[Sequence[Sample]], ids: Sequence[str],
               *, max_pairs_per_prompt: int = 2) -> tuple[list[dict[str, Any]], dict[str, int]]:
  """Pair records and counts: pairs by rejected kind, prompts without a correct / a wrong sample."""
  out, counts = [], collections.Counter()
  for prompt, ss, pid in zip(prompts, samples, ids):
    by_kind: dict[str, list[Sample]] = collections.defaultdict(list)
    for s in ss:
      by_kind[kind(s)].append(s)
    counts["samples_correct"] += len(by_kind["correct"])
    counts["samples"] += len(ss)
    wrong = [k for k in WRONG_KINDS if by_kind[k]]
    if not by_kind["correct"]:
      counts["prompts_no_correct"] += 1
      continue
    if not wrong:
      counts["prompts_all_correct"] += 1
      continue
    made = 0
    for j in range(max(len(v) for v in by_kind.values())):  # round-robin over the kinds
      for k in wrong:
        if made < max_pairs_per_prompt and j < len(by_kind[k]):
          chosen = by_kind["correct"][(made) % len(by_kind["correct"])]
          rejected = by_kind[k][j]
          if chosen.text == rejected.text:
            continue
          out.append({"prompt": prompt, "chosen": chosen.text, "rejected": rejected.text,
                      "extra_info": {"id": pid, "rejected_kind": k, "rejected_answer": rejected.answer}})
          counts[f"pairs_{k}"] += 1
          made += 1
  counts["pairs"] = len(out)
  return out, dict(counts)


def grade_samples(texts: Sequence[Sequence[str]], truncated: Sequence[Sequence[bool]], truths: Sequence[str],
                  extract: Callable[[str], str | None], matches: Callable[[str | None, str], bool],
                  ) -> list[list[Sample]]:
  """`Sample`s of each prompt's completions, graded by `matches(extract(text), truth)`."""
  out = []
  for ts, trs, truth in zip(texts, truncated, truths):
    row = []
    for t, tr in zip(ts, trs):
      a = extract(t)
      row.append(Sample(text=t, truncated=bool(tr), answer=a, correct=a is not None and matches(a, truth)))
    out.append(row)
  return out
