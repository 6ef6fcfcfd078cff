"""Multiple choice: options shuffled with a fixed seed per item, and the chosen letter read back.

The letter is taken from, in order: the last "Answer: C" / "answer is (C)" (Markdown bold
allowed), the last `\\boxed{C}`, the last "(C)", the last standalone capital letter among the
options. simple-evals' GPQA reads only the first form; the others catch models that ignore
the requested format.
"""

import dataclasses
import hashlib
import random
import re
from typing import Sequence

LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True, repr=False)
class Shuffled:
  """Options in display order and the letter of the correct one."""
  options: tuple[str, ...]
  correct_letter: str

  def __repr__(self) -> str:  # never show option text (GPQA asks that it stay out of logs)
    return f"Shuffled(n={len(self.options)}, correct_letter={self.correct_letter!r})"


def shuffle_options(correct: str, incorrect: Sequence[str], key: str, seed: int = 0) -> Shuffled:
  """Shuffles `[correct, *incorrect]` with an RNG seeded from (`seed`, `key`) alone."""
  options = [correct, *incorrect]
  digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
  order = list(range(len(options)))
  random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
  return Shuffled(tuple(options[i] for i in order), LETTERS[order.index(0)])


def _patterns(letters: str) -> list[re.Pattern[str]]:
  cls = f"[{letters}]"
  return [
      re.compile(rf"(?i:answer\s*(?:is|:)?)\s*(?:\*\*|\$|\\\()*\s*:?\s*(?:\*\*)?\s*"
                 rf"[\(\[]?\s*({cls})\b"),
      re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\s*\(?({cls})\)?\s*\}}"),
      re.compile(rf"\(({cls})\)"),
      re.compile(rf"(?<![\w'’-])({cls})(?![\w'’-])"),
  ]


def extract_letter(completion: str, letters: str = LETTERS) -> str | None:
  """The option letter a completion chooses, or None."""
  for pattern in _patterns(letters):
    found = [m.group(1) for m in pattern.finditer(completion)]
    if found:
      return found[-1]
  return None


def grade_choice(completion: str, correct_letter: str, letters: str = LETTERS) -> bool:
  """Whether the completion chooses `correct_letter`."""
  return extract_letter(completion, letters) == correct_letter
