"""Generate completions for benchmark items with the in-graph sampler, then grade them.

Rows (item x sample, in item order) are cut into batches of `batch_size` rows, every batch
left-padded to one length, the power of two at or above the benchmark's longest prompt (at
least MIN_PROMPT_BUCKET), and the last batch filled up with copies of a real row. So the jitted
sampler (`sampling.generate_with_params`) compiles once per benchmark, and benchmarks whose
prompts fit the same bucket (most of them fit 512 tokens) share one compiled program. The
padding is cheap: decoding, over prompt + `max_new_tokens` cache slots, dominates.

Grading goes through `predictions.grade_predictions`, the same path as
`launch/evaluate.py --predictions=FILE`, so a model run and a file of its completions grade
alike.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import pathlib
import tempfile
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import transformers

from grlo_jax import data
from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import grading
from grlo_jax.eval import predictions as predictions_lib
from grlo_jax.models import Transformer
from grlo_jax.rewards.verifiers import code
from grlo_jax.sampling import SamplingParams, generate_with_params

log = logging.getLogger(__name__)

MIN_PROMPT_BUCKET = 512
# A base model runs on past its answer into a new problem or few-shot example; cut it there.
# (Chat completions end at <|im_end|>.) Code graders cut at these too.
BASE_STOP = {
    "math": ("\nProblem:",),
    "choice": ("\nAnswer the following multiple choice question",),
    "humaneval": code.HUMANEVAL_STOP,
    "mbpp": code.MBPP_STOP,
}
# GPQA's authors ask that its questions stay out of files; completions may quote them.
WITHHELD_COMPLETIONS = ("gpqa_diamond",)


def prompt_texts(tokenizer: transformers.PreTrainedTokenizerBase, items: Sequence[bm.Item],
                 chat: bool) -> list[str]:
  """Each item's chat-templated `messages` (chat) or plain `prompt` (base model)."""
  if chat:
    return data.format_prompts(tokenizer, [it.messages for it in items])
  return [it.prompt for it in items]


def bucket_length(n: int, minimum: int = MIN_PROMPT_BUCKET) -> int:
  """The smallest power of two >= max(n, minimum): the padded prompt length."""
  return max(minimum, 1 << max(n - 1, 0).bit_length())


def left_pad(ids: Sequence[np.ndarray], length: int, batch_size: int,
             pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """ids_bp, mask_bp [batch_size, length]: rows right-aligned; rows past len(ids) copy row 0."""
  if not 0 < len(ids) <= batch_size:
    raise ValueError(f"{len(ids)} rows for a batch of {batch_size}")
  ids_bp = np.full((batch_size, length), pad_id, np.int32)
  mask_bp = np.zeros((batch_size, length), np.int32)
  for b in range(batch_size):
    row = ids[b] if b < len(ids) else ids[0]
    if len(row) > length:
      raise ValueError(f"a prompt of {len(row)} tokens does not fit in {length}")
    if len(row):
      ids_bp[b, length - len(row):] = row
      mask_bp[b, length - len(row):] = 1
  return ids_bp, mask_bp


def cut_at_stop(benchmark: str, text: str) -> str:
  """A base model's completion up to its benchmark's stop sequence."""
  return code.truncate_at_stop(text, BASE_STOP.get(bm.kind(benchmark), ()))


def _eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(seconds)))


def generate_completions(model: Transformer, tokenizer: transformers.PreTrainedTokenizerBase,
                         items: Sequence[bm.Item], *, max_new_tokens: int,
                         temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                         num_samples: int = 1, batch_size: int = 32, chat: bool = True,
                         seed: int = 0, min_prompt_bucket: int = MIN_PROMPT_BUCKET) -> list[list[str]]:
  """`num_samples` completions of each item, as `out[item][sample]` in the order of `items`.

  `batch_size` counts rows (item x sample) per sampler call; every call has that many, so that
  benchmarks share compiled programs; `min_prompt_bucket` is the shortest padded prompt length
  (short-prompt tasks such as `arithmetic` pass less). Temperature 0 is greedy. Logs
  progress (items done, tokens/s, ETA) after each batch; never any text.
  """
  if not items:
    return []
  if num_samples < 1 or batch_size < 1:
    raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
  name = items[0].benchmark
  ids = data.special_ids(tokenizer)
  params = SamplingParams(max_new_tokens=max_new_tokens, temperature=float(temperature),
                          top_k=int(top_k), top_p=float(top_p), stop_token_ids=ids.eos_ids,
                          pad_token_id=ids.pad_id)
  prompt_ids = tokenizer(prompt_texts(tokenizer, items, chat), add_special_tokens=False)["input_ids"]
  rows = [(i, s) for i in range(len(items)) for s in range(num_samples)]
  row_ids = [np.asarray(prompt_ids[i], np.int32) for i, _ in rows]
  length = bucket_length(max(map(len, row_ids)), min_prompt_bucket)
  batches = [np.arange(i, min(i + batch_size, len(rows))) for i in range(0, len(rows), batch_size)]
  out: list[list[str]] = [[""] * num_samples for _ in items]
  key = jax.random.key(seed)
  t0 = time.perf_counter()
  done_rows = new_tokens = 0

  def finish(batch: np.ndarray, sample) -> None:
    nonlocal done_rows, new_tokens
    tokens_bn, lengths_b = jax.device_get((sample.tokens, sample.lengths))
    texts = tokenizer.batch_decode([tokens_bn[b, :lengths_b[b]] for b in range(len(batch))],
                                   skip_special_tokens=True)
    for r, text in zip(batch, texts):
      i, s = rows[r]
      out[i][s] = text if chat else cut_at_stop(name, text)
    done_rows += len(batch)
    new_tokens += int(lengths_b[:len(batch)].sum())
    elapsed = time.perf_counter() - t0
    log.info("%s: %d/%d items, %.0f tokens/s, ETA %s", name, done_rows // num_samples, len(items),
             new_tokens / elapsed, _eta(elapsed / done_rows * (len(rows) - done_rows)))

  pending = None
  for n, batch in enumerate(batches):
    ids_bp, mask_bp = left_pad([row_ids[r] for r in batch], length, batch_size, ids.pad_id)
    # Dispatch this batch before reading the last one back, so decoding text overlaps sampling.
    sample = generate_with_params(model, ids_bp, mask_bp, jax.random.fold_in(key, n), params)
    if pending is not None:
      finish(*pending)
    pending = (batch, sample)
  finish(*pending)
  return out


def grade_completions(completions: Mapping[str, Sequence[tuple[bm.Item, Sequence[str]]]],
                      data_dir: str | pathlib.Path) -> dict:
  """Grades {benchmark: [(item, completions)]} as `predictions.grade_predictions` does."""
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "predictions.jsonl"
    with open(path, "w", encoding="utf-8") as f:
      for name, pairs in completions.items():
        for item, samples in pairs:
          for c in samples:
            f.write(json.dumps({"benchmark": name, "id": item.id, "completion": c}) + "\n")
    return with_pass_at_k(predictions_lib.grade_predictions(path, data_dir, list(completions)))


def with_pass_at_k(report: dict) -> dict:
  """Adds pass@k, k = the fewest samples of any item, where the graded report lacks it
  (it carries powers of two only)."""
  correct = collections.defaultdict(dict)
  for record in report["items"]:
    correct[record["benchmark"]][record["id"]] = record["correct"]
  for name, by_item in correct.items():
    k = min(map(len, by_item.values()))
    report["benchmarks"][name].setdefault(f"pass@{k}", grading.aggregate(by_item, (k,))[f"pass@{k}"])
  return report


def item_records(report: dict, completions: Mapping[tuple[str, str], Sequence[str]]) -> list[dict]:
  """Per-item records: benchmark, id, completions, correct, extracted. GPQA's completions are
  left out (they may quote the question)."""
  records = []
  for r in report["items"]:
    record = {"benchmark": r["benchmark"], "id": r["id"]}
    if r["benchmark"] not in WITHHELD_COMPLETIONS:
      record["completions"] = list(completions[(r["benchmark"], r["id"])])
    records.append(record | {"correct": r["correct"], "extracted": r["extracted"]})
  return records
