"""Math answer extraction and equivalence (synthetic cases; the data checks are in tests/eval)."""

import concurrent.futures
import signal

import pytest

from grlo_jax.rewards.verifiers import math as mv


@pytest.mark.parametrize("completion, want", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("first \\boxed{3}, then \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
    ("\\fbox{x^{2}+1}", "x^{2}+1"),
    ("hence \\boxed 7.", "7."),
    ("The answer is 42.", "42"),
    ("Therefore, the final answer is $3.5$. I hope", "3.5"),
    ("**Final answer:** \\(x=2\\)", "x=2"),
    ("we count 12 red and 17 blue", "17"),
    ("no digits here", None),
    ("unbalanced \\boxed{12", "12"),
])
def test_extract_answer(completion, want):
  assert mv.extract_answer(completion) == want


@pytest.mark.parametrize("pred, gold", [
    ("0.5", "\\frac12"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("x = 5", "5"),
    ("10000", "10,\\!000"),
    ("10,000", "10000"),
    ("90", "90^\\circ"),
    ("90 degrees", "90^{\\circ}"),
    ("C", "\\text{(C)}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("[-2,7]", "x \\in [-2,7]"),
    ("-2, 1", "1,-2"),
    ("(12,102) \\cup (2,12)", "(2,12) \\cup (12,102)"),
    ("5", "5 \\text{ cm}"),
    ("864", "864 \\mbox{ inches}^2"),
    ("18.9", "\\$18.90"),
    ("8", "8 \\%"),
    ("1.24 \\times 10^{-8}", "1.24e-8"),
    ("25", "025"),
    ("27", "27.0"),
    ("2\\sqrt{10}", "\\sqrt{40}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("2n-1", "k=2 n-1"),
    ("2^{10}", "1024"),
    ("-5", "-5"),
])
def test_equivalent(pred, gold):
  assert mv.answers_match(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("(2,1)", "(1,2)"),
    ("Nevely", "\\text{Evelyn}"),
    ("26", "25"),
    ("0.5541", "0.554"),
    ("3.5 \\times 10^{-8}", "1.24e-8"),
    ("x+1", "x+2"),
    ("", "5"),
    (None, "5"),
    ("37 + 78", "115"),  # the question restated: SymPy alone would evaluate it to the gold
    ("6 \\times 7", "42"),
    ("50-8", "42"),
])
def test_not_equivalent(pred, gold):
  assert not mv.answers_match(pred, gold)


def test_math_reward_values():
  assert mv.math_reward("... so the answer is $\\boxed{\\frac{3}{4}}$", "0.75") == 1.0
  assert mv.math_reward("... so the answer is $\\boxed{\\frac{3}{5}}$", "0.75") == 0.0
  assert mv.math_reward("I do not know", "0.75") == 0.0


def test_math_reward_in_threads_matches_main_thread():
  # math-verify's default signal timeouts raise in non-main threads; ours must not.
  cases = [(f"the answer is $\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}$", f"{i}/{i + 1}")
           for i in range(20)]
  cases += [("$\\boxed{x^2+2x+1}$", "(x+1)^2"), ("$\\boxed{x^2+1}$", "(x+1)^2")]
  want = [mv.math_reward(c, g) for c, g in cases]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda cg: mv.math_reward(*cg), cases))
  assert got == want
  assert sum(want) == 21


def test_sigalrm_handler_untouched():
  before = signal.getsignal(signal.SIGALRM)
  assert mv.answers_match("x^2+2x+1", "(x+1)^2")
  assert signal.getsignal(signal.SIGALRM) is before


def test_in_process_mode_without_time_limit():
  assert mv.answers_match("x^2+2x+1", "(x+1)^2", timeout_s=None)
  assert not mv.answers_match("x^2+1", "(x+1)^2", timeout_s=None)
