"""Evaluate on GRLO prompt records with a verifiable answer (`reward_model.ground_truth`).

  items = records_to_items(data.read_records("arithmetic:test:200"), "arithmetic:test:200")
  report = grade(items, completions)        # {"benchmarks": {name: summary}, "items": [...]}

Any JSONL / Parquet of GRLO records, or a synthetic source such as `arithmetic:test`, evaluates
as a math benchmark: the record's chat is the prompt, its ground truth the gold answer, graded by
the math verifier (the same one that scores them as rewards in RLVR training).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from grlo_jax.data.records import PromptRecord
from grlo_jax.eval import grading
from grlo_jax.eval.benchmarks import Item


def records_to_items(records: Sequence[PromptRecord], name: str) -> list[Item]:
  """One math item per record; a record without a ground truth is an error naming it."""
  items = []
  for r in records:
    if not r.ground_truth.strip():
      raise ValueError(f"{name}: record {r.index} has no reward_model.ground_truth to grade against")
    text = "\n\n".join(m["content"] for m in r.messages if m["role"] != "assistant")
    item_id = str(r.extra_info.get("id", r.index))
    items.append(Item(name, item_id, text, tuple(dict(m) for m in r.messages), r.ground_truth))
  ids = collections.Counter(it.id for it in items)
  if len(ids) != len(items):  # ids key the report's items: fall back to record indices
    items = [Item(it.benchmark, str(r.index), it.prompt, it.messages, it.answer)
             for it, r in zip(items, records)]
  return items


def grade(items: Sequence[Item], completions: Sequence[Sequence[str]]) -> dict:
  """Grades `completions[i]` (samples of `items[i]`) with the math grader, like
  `predictions.grade_predictions` grades a benchmark."""
  if not items:
    raise ValueError("no items to grade")
  name = items[0].benchmark
  flat_items = [it for it, cs in zip(items, completions) for _ in cs]
  grades = grading.grade_many(name, flat_items, [c for cs in completions for c in cs], family="math")
  per_item: dict[str, list[grading.Grade]] = collections.defaultdict(list)
  for it, g in zip(flat_items, grades):
    per_item[it.id].append(g)
  correct = {i: [g.correct for g in gs] for i, gs in per_item.items()}
  summary = grading.aggregate(correct, grading.default_ks(min(map(len, correct.values()))))
  return {"benchmarks": {name: summary},
          "items": [{"benchmark": name, "id": i, "correct": [g.correct for g in gs],
                     "extracted": [g.extracted for g in gs]} for i, gs in per_item.items()]}
