"""Code answers: pull the program out of a completion, join it to its tests, run it sandboxed.

HumanEval: prompt + completion + test + `check(entry_point)` (OpenAI's human-eval harness).
MBPP: code + test_setup_code + the `assert` lines of test_list (Austin et al., 2021); the one
test-split item with setup code builds objects from classes the solution defines.
"""

import re
from typing import Sequence

from grlo_jax.rewards.verifiers import sandbox

# The Codex paper's stop sequences for HumanEval body completions (Chen et al., 2021).
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# MBPP's few-shot format closes each solution with this tag.
MBPP_STOP = ("[DONE]",)

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
  """`text` up to the first of `stops`."""
  cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
  return text[:cut]


def extract_code(completion: str, entry_point: str | None = None) -> str | None:
  """The code in a fenced block (the one defining `entry_point` if several), else None."""
  blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(completion)]
  blocks = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
  if not blocks:
    return None
  if entry_point is not None:
    defining = [b for b in blocks if re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
    if defining:
      return defining[0]
  return max(blocks, key=len)


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
  """The program OpenAI's harness runs; a fenced or whole-function answer replaces the body."""
  code = extract_code(completion, entry_point)
  if code is None and re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", completion, re.M):
    code = completion
  if code is not None:
    # The prompt's own helpers and imports stay; the new definition shadows the stub.
    solution = f"{prompt}    pass\n\n{code}"
  else:
    solution = prompt + truncate_at_stop(completion, HUMANEVAL_STOP)
  return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


def mbpp_program(completion: str, test_list: Sequence[str], test_setup_code: str = "") -> str:
  """The completion's code followed by the task's asserts."""
  code = extract_code(completion)
  if code is None:
    code = truncate_at_stop(completion, MBPP_STOP).replace("[BEGIN]", "")
  tests = "\n".join(test_list)
  return f"{code}\n\n{test_setup_code}\n\n{tests}\n"


def code_reward(completion: str, test_code: str,
                limits: sandbox.Limits = sandbox.Limits()) -> float:
  """1.0 when the completion's code followed by `test_code` runs clean in the sandbox (RLVR)."""
  code = extract_code(completion)
  program = f"{completion if code is None else code}\n\n{test_code}\n"
  return 1.0 if sandbox.run_python(program, limits).passed else 0.0
