"""Math final answers: extract one from a completion and decide if it equals the gold answer.

Extraction takes, in order: the last `\\boxed{}` / `\\fbox{}` (balanced braces), the text after
the last "the answer is" / "final answer:", the last number. Equivalence first compares
normalised strings and plain numbers (exactly for integer golds, to a relative 1e-4
otherwise; a numeric gold is not matched by unevaluated arithmetic such as "37 + 78"), then
falls back to math-verify (SymPy) in a worker process with a hard time limit (see
process_pool.py for why not signals or thread exceptions). All of it is thread-safe.
"""

import fractions
import logging
import os
import re

import math_verify

from grlo_jax.rewards.verifiers import process_pool

DEFAULT_TIMEOUT_S = 5.0
REL_TOL = 1e-4
WORKERS = max(1, min(4, os.cpu_count() or 1))


# math-verify warns once that its signal timeouts are off; they are off on purpose (see below).
class _DropTimeoutDisabledWarning(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
  logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


# ---- extraction ------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?:\*\*)?\s*:?\s*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def _braced(text: str, start: int) -> tuple[str, int] | None:
  # (contents, index after the closing brace) of the group opening at text[start].
  if start >= len(text) or text[start] != "{":
    return None
  depth = 0
  for i in range(start, len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1:i], i + 1
  return None


def extract_boxed(text: str) -> str | None:
  """Contents of the last `\\boxed{...}` or `\\fbox{...}` with balanced braces."""
  for m in reversed(list(_BOX_RE.finditer(text))):
    group = _braced(text, m.end())
    if group is not None:
      return group[0].strip()
    if text[m.start():m.end()].endswith(" "):  # `\boxed 5`: one bare token
      token = re.match(r"[^\s$]+", text[m.end():])
      if token:
        return token.group(0)
  return None


def _after_phrase(text: str) -> str | None:
  matches = list(_ANSWER_PHRASE_RE.finditer(text))
  if not matches:
    return None
  rest = text[matches[-1].end():].lstrip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if rest.startswith(left):
      end = rest.find(right, len(left))
      if end > 0:
        return rest[len(left):end].strip()
  line = rest.split("\n", 1)[0]
  line = re.split(r"\.\s|\.$", line, maxsplit=1)[0]  # end of sentence, not a decimal point
  line = line.strip().rstrip(".*").strip()
  return line or None


def extract_answer(completion: str) -> str | None:
  """The final answer a completion commits to, or None."""
  boxed = extract_boxed(completion)
  if boxed is not None:
    return boxed
  phrase = _after_phrase(completion)
  if phrase is not None:
    return phrase
  numbers = _NUMBER_RE.findall(completion.replace("\u2212", "-"))
  return numbers[-1] if numbers else None


# ---- normalisation ---------------------------------------------------------------------------

_TEXT_MACROS = ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mbox", "operatorname")
_UNITS = (
    "units?", "square units", "sq units", "inches", "inch", "feet", "foot", "ft", "yards?",
    "miles?", "mph", "km/h", "km", "cm", "mm", "m", "meters?", "centimeters?", "kilometers?",
    "seconds?", "sec", "minutes?", "min", "hours?", "hrs?", "days?", "weeks?", "years?",
    "degrees?", "cents?", "dollars?", "points?", "people", "students?", "ways", "kg", "grams?",
    "pounds?", "lbs?", "liters?", "mL", "ml",
)
_UNIT_RE = re.compile(r"^(.*?[\d}])\s*(?:" + "|".join(_UNITS) + r")(?:\s*\^\s*\{?[23]\}?)?\s*$")
_VAR_PREFIX_RE = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in\b)\s*")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _unwrap_macros(s: str, names: tuple[str, ...]) -> str:
  pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*(?=\{)")
  while (m := pattern.search(s)) is not None:
    group = _braced(s, m.end())
    if group is None:
      break
    s = s[:m.start()] + group[0] + s[group[1]:]
  return s


def split_top_level(s: str, sep: str = ",") -> list[str]:
  """Splits on `sep` outside (), [], {}."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(s):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(s[start:i])
      start = i + 1
  parts.append(s[start:])
  return parts


def _strip_delimiters(s: str) -> str:
  s = s.strip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
      s = s[len(left):len(s) - len(right)].strip()
  while (m := re.fullmatch(r"\\(?:boxed|fbox)\s*(\{.*\})", s, re.DOTALL)) is not None:
    group = _braced(m.group(1), 0)
    if group is None or group[1] != len(m.group(1)):
      break
    s = group[0].strip()
  return s


def normalize_answer(s: str) -> str:
  """Canonical LaTeX for comparison: no delimiters, spacing, units, degrees or `x =` prefix."""
  s = _strip_delimiters(s.replace("\u2212", "-"))
  s = s.replace("\\$", "").replace("$", "")
  s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
  s = re.sub(r"\\[!,;: ]|\\q?quad\b|~|\\displaystyle\b", " ", s)
  s = re.sub(r"\\[dt]frac\b", r"\\frac", s)
  s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|°|\\degree\b", "", s)
  s = re.sub(r"\\?%", "", s)
  s = _unwrap_macros(s, _TEXT_MACROS)
  s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
  parts = []
  for part in split_top_level(s):
    part = part.strip()
    if part.count("=") == 1 or "\\in" in part:
      part = _VAR_PREFIX_RE.sub("", part)
    if (m := _UNIT_RE.match(part)) is not None:
      part = m.group(1)
    parts.append(part.strip())
  s = ",".join(parts)
  if _THOUSANDS_RE.match(s.replace(" ", "")):
    s = s.replace(" ", "").replace(",", "")
  return s


# Golds that are words (`\text{Evelyn}`, `even`) compare as text: as SymPy products of
# symbols, `Evelyn` would equal `Nevely`.
def _is_textual(gold: str) -> bool:
  g = _strip_delimiters(gold)
  if re.fullmatch(r"\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}", g):
    return not re.search(r"\d", g)
  return bool(re.fullmatch(r"[A-Za-z][a-z]{2,}(?: [a-z]+)*", g))


def _text_key(s: str) -> str:
  return re.sub(r"[^a-z0-9]", "", s.lower())


# ---- equivalence -----------------------------------------------------------------------------

_SCI_RE = re.compile(
    r"^(-?\d+(?:\.\d+)?)\s*(?:e|E|\\times\s*10\s*\^|\\cdot\s*10\s*\^)\s*\{?([-+]?\d+)\}?$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(\d+)\}$|^(-?\d+)/(\d+)$")


def _as_number(s: str) -> fractions.Fraction | None:
  s = s.replace(" ", "")
  if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", s):
    return fractions.Fraction(s)
  if (m := _SCI_RE.match(s)) is not None:
    return fractions.Fraction(m.group(1)) * fractions.Fraction(10) ** int(m.group(2))
  if (m := _FRAC_RE.match(s)) is not None:
    if m.group(2) is not None:
      sign = -1 if m.group(1) else 1
      return sign * fractions.Fraction(int(m.group(2)), int(m.group(3)) or 1)
    return fractions.Fraction(int(m.group(4)), int(m.group(5)) or 1)
  return None


def _numbers_close(pred: fractions.Fraction, gold: fractions.Fraction, gold_text: str) -> bool:
  if re.fullmatch(r"-?\d+", gold_text.replace(" ", "")):
    return pred == gold
  return abs(pred - gold) <= REL_TOL * abs(gold)


# Plain arithmetic on numbers ("37 + 78", "6 \\times 7"): the question restated, not its value.
_UNEVALUATED_RE = re.compile(r"-?\d+(?:\.\d+)?(?:(?:[-+*×]|\\times|\\cdot)-?\d+(?:\.\d+)?)+")

_FUNCTION_MACROS = re.compile(
    r"\\(?:d?frac|sqrt|pi|cdot|times|div|log|ln|lg|exp|sinh?|cosh?|tanh?|cot|sec|csc|arcsin|"
    r"arccos|arctan|infty|pm|mp|le|ge|leq|geq|neq|cup|cap|in|binom|begin|end|pmatrix|bmatrix|"
    r"matrix|mathbb|circ|prime)(?![a-zA-Z])")


def _variables(s: str) -> set[str]:
  # Letters and Greek macros that stand for unknowns; `e` and `i` count as constants.
  s = _FUNCTION_MACROS.sub(" ", re.sub(r"\\(?:begin|end)\{[a-zA-Z*]*\}", " ", s))
  found = set(re.findall(r"\\[a-zA-Z]+|[a-zA-Z]", s))
  return found - {"e", "i"}


def _for_math_verify(s: str) -> str:
  s = re.sub(r"(\d(?:\.\d+)?)[eE]([-+]?\d+)\b", r"\1\\times 10^{\2}", s)
  return f"${s}$"


def _math_verify_equal(pred: str, gold: str) -> bool:
  gold_parsed = math_verify.parse(_for_math_verify(gold), parsing_timeout=None)
  pred_parsed = math_verify.parse(_for_math_verify(pred), parsing_timeout=None)
  if not gold_parsed or not pred_parsed:
    return False
  return math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None)


_POOL = process_pool.TimedProcessPool(WORKERS, modules=(__name__,))


def answers_match(pred: str | None, gold: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> bool:
  """Whether the extracted answer `pred` equals `gold`; False when SymPy overruns `timeout_s`.

  `timeout_s=None` runs SymPy in this process with no limit.
  """
  if pred is None:
    return False
  p, g = normalize_answer(pred), normalize_answer(str(gold))
  if not p or not g:
    return False
  if p.replace(" ", "") == g.replace(" ", ""):
    return True
  if _is_textual(str(gold)):
    return _text_key(p) == _text_key(g)
  p_num, g_num = _as_number(p), _as_number(g)
  if p_num is not None and g_num is not None:
    return _numbers_close(p_num, g_num, g)
  if g_num is not None and _UNEVALUATED_RE.fullmatch(p.replace(" ", "")):
    return False  # a number's gold takes the number: SymPy would evaluate "37 + 78" to 115
  if _variables(p) != _variables(g):  # also spares SymPy its slowest hopeless comparisons
    return False
  if timeout_s is None:
    return _math_verify_equal(p, g)
  return bool(_POOL.call(_math_verify_equal, (p, g), timeout_s, False))


def grade_math(completion: str, gold: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> bool:
  """Whether the final answer in `completion` equals `gold`."""
  return answers_match(extract_answer(completion), gold, timeout_s)


def math_reward(completion: str, ground_truth: str) -> float:
  """1.0 when the completion's final answer equals `ground_truth`, else 0.0 (RLVR reward)."""
  return 1.0 if grade_math(completion, ground_truth) else 0.0
