"""Grade a file of given completions, no model needed (`launch/evaluate.py --predictions=FILE`).

Each JSONL line: {"benchmark": "math500", "id": "<item id>", "completion": "..."}. Several
lines with the same benchmark and id are samples of one item, for pass@k.
"""

import collections
import dataclasses
import pathlib
from typing import Callable, Iterable

from grlo_jax.data.jsonl import iter_jsonl
from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import grading
from grlo_jax.eval import win_rate

REQUIRED_KEYS = ("benchmark", "id", "completion")


@dataclasses.dataclass(frozen=True)
class Prediction:
  benchmark: str
  id: str
  completion: str
  line: int


def read_predictions(path: str | pathlib.Path) -> list[Prediction]:
  """Parses and checks the file; errors name the file, the line and what is wrong."""
  path = pathlib.Path(path)
  out = []
  for where, line_no, record in iter_jsonl(path):
    if not isinstance(record, dict):
      raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in REQUIRED_KEYS:
      if key not in record:
        raise ValueError(f"{where}: missing key {key!r}")
    if not isinstance(record["completion"], str):
      raise ValueError(f"{where}: 'completion' must be a string")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
      raise ValueError(f"{where}: 'id' must be a string or an integer")
    if record["benchmark"] not in bm.BENCHMARKS:
      raise ValueError(f"{where}: unknown benchmark {record['benchmark']!r}")
    out.append(Prediction(record["benchmark"], str(record["id"]), record["completion"], line_no))
  return out


def grade_predictions(predictions_jsonl_path: str | pathlib.Path,
                      data_dir: str | pathlib.Path,
                      benchmarks: Iterable[str] | None = None,
                      score: Callable[[str, str], float] | None = None) -> dict:
  """Grades every prediction (only those of `benchmarks` when given).

  `data_dir` holds the benchmark files (or their `eval/` folder). AlpacaEval lines need
  `score(prompt, response) -> float`, e.g. a reward model, for the win-rate proxy.
  Returns {"benchmarks": {name: summary}, "items": [per-item records]}.
  """
  path = pathlib.Path(predictions_jsonl_path)
  preds = read_predictions(path)
  wanted = None if benchmarks is None else list(benchmarks)
  for name in wanted or ():
    bm.kind(name)  # unknown names raise here
  by_benchmark: dict[str, list[Prediction]] = collections.defaultdict(list)
  for p in preds:
    if wanted is None or p.benchmark in wanted:
      by_benchmark[p.benchmark].append(p)
  missing = [b for b in wanted or () if b not in by_benchmark]
  if missing:
    raise ValueError(f"{path}: no predictions for {', '.join(missing)}")

  report: dict = {"benchmarks": {}, "items": []}
  for name, group in by_benchmark.items():
    items = {item.id: item for item in bm.load(name, data_dir)}
    for p in group:
      if p.id not in items:
        raise ValueError(f"{path}:{p.line}: {name} has no item with id {p.id!r}")
    if bm.kind(name) == "preference":
      if score is None:
        raise ValueError(f"{path}:{group[0].line}: {name} needs a scoring function (a reward "
                         "model) for its win-rate proxy")
      report["benchmarks"][name] = win_rate.win_rate(
          [items[p.id] for p in group], [p.completion for p in group], score)
      continue
    grades = grading.grade_many(name, [items[p.id] for p in group], [p.completion for p in group])
    per_item: dict[str, list[grading.Grade]] = collections.defaultdict(list)
    for p, g in zip(group, grades):
      per_item[p.id].append(g)
    correct = {i: [g.correct for g in gs] for i, gs in per_item.items()}
    summary = grading.aggregate(correct, grading.default_ks(min(map(len, correct.values()))))
    summary["missing"] = len(items) - len(per_item)
    report["benchmarks"][name] = summary
    for item_id, gs in per_item.items():
      report["items"].append({"benchmark": name, "id": item_id, "correct": [g.correct for g in gs],
                              "extracted": [g.extracted for g in gs]})
  return report
