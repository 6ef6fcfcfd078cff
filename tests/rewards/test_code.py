"""Program assembly for code answers, and the code reward."""

from grlo_jax.rewards.verifiers import code
from grlo_jax.rewards.verifiers import sandbox

PROMPT = 'def add(a, b):\n    """Adds."""\n'
TEST = "def check(f):\n    assert f(2, 3) == 5\n"


def _runs(program: str) -> bool:
  return sandbox.run_python(program).passed


def test_extract_code_prefers_the_block_defining_the_entry_point():
  text = "```\nprint(1)\n```\nthen\n```python\ndef add(a, b):\n    return a + b\n```"
  assert code.extract_code(text, "add").startswith("def add")
  assert code.extract_code("no code here") is None
  assert code.extract_code("```python\ndef f():\n  return 1\n") == "def f():\n  return 1\n"


def test_humaneval_program_forms():
  body = "    return a + b\n\n\ndef unrelated():\n    pass\n"
  program = code.humaneval_program(PROMPT, body, TEST, "add")
  assert "unrelated" not in program  # cut at the Codex stop sequences
  assert _runs(program)
  whole = "```python\ndef add(a, b):\n    return a + b\n```"
  assert _runs(code.humaneval_program(PROMPT, whole, TEST, "add"))
  assert not _runs(code.humaneval_program(PROMPT, "    return a - b\n", TEST, "add"))


def test_mbpp_program_forms():
  tests = ["assert add(2, 3) == 5"]
  assert _runs(code.mbpp_program("def add(a, b):\n  return a + b\n[DONE]\nmore text", tests))
  assert _runs(code.mbpp_program("```python\ndef add(a, b):\n  return a + b\n```", tests))
  assert not _runs(code.mbpp_program("def add(a, b):\n  return 0\n", tests))


def test_code_reward():
  test_code = "assert add(2, 3) == 5"
  assert code.code_reward("```python\ndef add(a, b):\n  return a + b\n```", test_code) == 1.0
  assert code.code_reward("def add(a, b):\n  return 0\n", test_code) == 0.0


def test_site_packages_opt_in():
  r = sandbox.run_python("import numpy\n", sandbox.Limits(site_packages=True))
  assert r.passed, r.stderr
  assert sandbox.run_python("import numpy\n").status == "failed"
