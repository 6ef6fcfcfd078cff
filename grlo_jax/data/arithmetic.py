"""A synthetic, verifiable task: integer additions, generated in process, with a held-out split.

  records = arithmetic.records("train", n=4096, seed=0)     # GRLO prompt records (dicts)
  data.read_records("arithmetic:test:200")                 # the same, as a prompt-file spec

Problems are `a + b` with `a`, `b` of `digits` digits (10..99 by default: 8100 problems). Which
split a problem is in depends on the problem alone (a CRC-32 of its text), never on the seed or on
how many are drawn: about one in ten is "test", the rest "train", and the two never share a
problem. `seed` picks and orders the `n` drawn from a split (without repeats). Every record is
rule-scored: `reward_model.ground_truth` is the sum, the prompt asks for it in `\\boxed{}`
(the MATH instruction, as `launch/evaluate.py` asks for math benchmarks).

Spec strings, wherever a prompt file is accepted (`data.train_files`, `evaluate.py --records`):
`arithmetic:SPLIT[:N[:SEED[:DIGITS]]]`, e.g. `arithmetic:train:4096:0`; N defaults to the whole
split, SEED to 0, DIGITS to 2.

`arithmetic-pairs:SPLIT[:N[:SEED[:DIGITS]]]` names the same N problems as the source of preference
pairs (`launch/make_pairs.py`): a model's own samples of them, ranked by the math verifier.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

SPLITS = ("train", "test")
TEST_BUCKETS = 1  # of 10: the share of problems held out
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
DATA_SOURCE = "synthetic/arithmetic"
PREFIX = "arithmetic:"
PAIRS_PREFIX = "arithmetic-pairs:"


def question(a: int, b: int) -> str:
  return f"What is {a} + {b}?"


def split_of(a: int, b: int) -> str:
  """"test" for about one problem in ten, by the problem's text alone."""
  return "test" if zlib.crc32(question(a, b).encode()) % 10 < TEST_BUCKETS else "train"


def _check(split: str, digits: int) -> None:
  if split not in SPLITS:
    raise ValueError(f"arithmetic split must be one of {SPLITS}, got {split!r}")
  if not 1 <= digits <= 6:
    raise ValueError(f"arithmetic digits must be 1..6, got {digits}")


def problems(split: str, digits: int = 2) -> list[tuple[int, int]]:
  """Every (a, b) of the split, in a fixed order."""
  _check(split, digits)
  lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits
  return [(a, b) for a in range(lo, hi) for b in range(lo, hi) if split_of(a, b) == split]


def records(split: str, n: int | None = None, seed: int = 0, digits: int = 2) -> list[dict[str, Any]]:
  """`n` distinct problems of `split` (all when None) as GRLO prompt records, in seeded order."""
  pool = problems(split, digits)
  n = len(pool) if n is None else n
  if not 0 < n <= len(pool):
    raise ValueError(f"arithmetic:{split} has {len(pool)} problems of {digits} digits; asked for {n}")
  order = np.random.default_rng([seed, SPLITS.index(split), digits]).permutation(len(pool))[:n]
  out = []
  for i in order:
    a, b = pool[i]
    out.append({
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": f"{question(a, b)}\n{INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(a + b)},
        "extra_info": {"split": split, "a": a, "b": b, "id": f"{a}+{b}"},
    })
  return out


def is_spec(path: Any) -> bool:
  return isinstance(path, str) and path.startswith(PREFIX)


def is_pairs_spec(path: Any) -> bool:
  return isinstance(path, str) and path.startswith(PAIRS_PREFIX)


def parse_spec(spec: str) -> dict[str, Any]:
  """`arithmetic:SPLIT[:N[:SEED[:DIGITS]]]` (or `arithmetic-pairs:...`) -> records()'s keyword
  arguments; raises ValueError for a malformed spec, an unknown split or digits outside 1..6
  (N is checked by records())."""
  prefix = PAIRS_PREFIX if is_pairs_spec(spec) else PREFIX
  parts = spec[len(prefix):].split(":")
  if not 1 <= len(parts) <= 4 or not parts[0]:
    raise ValueError(f"{spec!r}: expected arithmetic:SPLIT[:N[:SEED[:DIGITS]]]")
  try:
    ints = [int(p) for p in parts[1:]]
  except ValueError:
    raise ValueError(f"{spec!r}: N, SEED and DIGITS must be integers") from None
  kw: dict[str, Any] = {"split": parts[0]}
  kw.update(zip(("n", "seed", "digits"), ints))
  _check(kw["split"], kw.get("digits", 2))
  return kw
