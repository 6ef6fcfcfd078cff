"""Preference pairs from a model's own samples, ranked by a verifier (`launch/make_pairs.py`).

For each prompt the model's k samples are graded against the ground truth and sorted into
kinds: "correct"; and three kinds of wrong ones: "truncated" (cut at the token limit, its last
number not the truth), "wrong_answer" (ended with an answer that is not the truth) and
"no_answer" (ended without any answer the verifier can extract). A pair is (a correct sample, a wrong
one): one pair per wrong kind found, each prompt contributing at most `max_pairs_per_prompt`,
so the kinds mix as they occur in the model's outputs. Prompts with no correct sample or no
wrong one make no pair (counted). Records are `{"prompt", "chosen", "rejected", "extra_info"}`
with strings: the common preference layout that `data.preferences` reads.

`edit_pairs` adds minimal pairs, each one of the model's samples against itself with only its
final answer changed (the edit re-graded by the verifier): "corrected" (a wrong sample with the
truth put in its answer's place, over the sample as it was) and "perturbed" (a correct sample over
itself with a nearby wrong number). They come from every prompt with an answer to edit, also the
~3 in 4 where no sample is correct, and the two sides differ only where the verifier looks.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from grlo_jax.data import jsonl

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


def _matches(answer: str | None, truth: str, matches: Callable[[str, str], bool]) -> bool:
  return answer is not None and matches(answer, truth)


def grade_samples(texts: Sequence[Sequence[str]], truncated: Sequence[Sequence[bool]], truths: Sequence[str],
                  extract: Callable[[str], str | None], matches: Callable[[str | None, str], bool],
                  ) -> list[list[Sample]]:
  """`Sample`s of each prompt's completions, graded by `matches(extract(text), truth)`."""
  out = []
  for ts, trs, truth in zip(texts, truncated, truths):
    row = []
    for t, tr in zip(ts, trs):
      a = extract(t)
      row.append(Sample(text=t, truncated=bool(tr), answer=a, correct=_matches(a, truth, matches)))
    out.append(row)
  return out


def replace_answer(text: str, answer: str, new: str) -> str | None:
  """`text` with the last standalone occurrence of `answer` replaced by `new`; None if absent."""
  # Standalone: not inside a longer number ("48" in "148" or "4.48"), a sentence's full stop allowed.
  found = list(re.finditer(rf"(?<!\d)(?<!\d\.){re.escape(answer)}(?!\.?\d)", text))
  if not found:
    return None
  m = found[-1]
  return text[:m.start()] + new + text[m.end():]


def nearby_wrong(truth: str, rng: random.Random) -> str | None:
  """A wrong number a slip would give (off by 1, 2 or 10, or two digits swapped); None if not an int."""
  if not re.fullmatch(r"\d+", truth):
    return None
  n = int(truth)
  options = {n + d for d in (-10, -2, -1, 1, 2, 10)} | ({int(truth[::-1])} if len(truth) > 1 else set())
  options = sorted(o for o in options if o >= 0 and o != n)
  return str(rng.choice(options))


def edit_pairs(prompts: Sequence[str], samples: Sequence[Sequence[Sample]], ids: Sequence[str],
               truths: Sequence[str], extract: Callable[[str], str | None], matches: Callable[[str, str], bool],
               *, per_prompt: int, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
  """Up to `per_prompt` minimal pairs a prompt ("corrected" and "perturbed", alternating where both
  exist). Each edit is re-graded as `grade_samples` grades, and one not graded as meant is dropped
  (counted)."""
  out, counts = [], collections.Counter()
  for prompt, ss, pid, truth in zip(prompts, samples, ids, truths):
    rng = random.Random(f"{seed}:{pid}")
    unique = list({s.text: s for s in ss if s.answer and s.answer.strip()}.values())
    corrected = [s for s in unique if not s.correct]
    perturbed = [s for s in unique if s.correct]
    queue = [x for pair in zip(perturbed, corrected) for x in pair]
    queue += perturbed[len(corrected):] + corrected[len(perturbed):]
    made = 0
    for s in queue:
      if made >= per_prompt:
        break
      new = truth if not s.correct else nearby_wrong(truth, rng)
      edited = None if new is None else replace_answer(s.text, s.answer, new)
      if edited is None or edited == s.text or _matches(extract(edited), truth, matches) == s.correct:
        counts["edits_dropped"] += 1
        continue
      chosen, rejected = (s.text, edited) if s.correct else (edited, s.text)
      edit = "perturbed" if s.correct else "corrected"
      out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                  "extra_info": {"id": pid, "edit": edit, "rejected_kind": "truncated" if s.truncated else
                                 "wrong_answer", "rejected_answer": s.answer if not s.correct else new}})
      counts[f"pairs_{edit}"] += 1
      made += 1
  return out, dict(counts)


SAMPLE_KEYS = ("id", "prompt", "answer", "samples", "truncated")


def write_samples(path, prompts: Sequence[str], texts: Sequence[Sequence[str]], truncated: Sequence[Sequence[bool]],
                  truths: Sequence[str], ids: Sequence[str]) -> None:
  """A prompt's samples a JSONL line (`SAMPLE_KEYS`): what `read_samples` gives back to mine again."""
  with open(path, "w", encoding="utf-8") as f:
    for row in zip(ids, prompts, truths, texts, truncated):
      f.write(json.dumps(dict(zip(SAMPLE_KEYS, row))) + "\n")


def read_samples(path) -> tuple[list[str], list[list[str]], list[list[bool]], list[str], list[str]]:
  """(prompts, texts, truncated, truths, ids) of a `write_samples` file; a bad line is named."""
  cols = {k: [] for k in SAMPLE_KEYS}
  for where, _, row in jsonl.iter_jsonl(path):
    missing = [k for k in SAMPLE_KEYS if not isinstance(row, dict) or k not in row]
    if missing:
      raise ValueError(f"{where}: key {missing[0]!r} missing (a samples file has {', '.join(SAMPLE_KEYS)})")
    if len(row["samples"]) != len(row["truncated"]):
      raise ValueError(f"{where}: key 'truncated' has {len(row['truncated'])} flags for "
                       f"{len(row['samples'])} samples")
    for k in SAMPLE_KEYS:
      cols[k].append(row[k])
  return cols["prompt"], cols["samples"], cols["truncated"], cols["answer"], cols["id"]
