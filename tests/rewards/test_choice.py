"""Multiple-choice shuffling and letter extraction (synthetic options)."""

import pytest

from grlo_jax.rewards.verifiers import choice


def test_shuffle_is_fixed_per_key_and_tracks_the_correct_option():
  a = choice.shuffle_options("right", ["w1", "w2", "w3"], key="q1")
  assert a == choice.shuffle_options("right", ["w1", "w2", "w3"], key="q1")
  assert a.options[choice.LETTERS.index(a.correct_letter)] == "right"
  assert sorted(a.options) == ["right", "w1", "w2", "w3"]
  letters = {choice.shuffle_options("r", ["a", "b", "c"], key=f"q{i}").correct_letter
             for i in range(40)}
  assert letters == set("ABCD")
  assert "right" not in repr(a)


@pytest.mark.parametrize("completion, want", [
    ("Reasoning.\nAnswer: C", "C"),
    ("the answer is a bit subtle... Answer: B", "B"),
    ("**Answer:** D", "D"),
    ("So the answer is (C).", "C"),
    ("Final: $\\boxed{B}$", "B"),
    ("Between (A) and (D), I pick (D)", "D"),
    ("Option B fits best", "B"),
    ("Answer: A\n...on reflection, Answer: C", "C"),
    ("nothing to see", None),
])
def test_extract_letter(completion, want):
  assert choice.extract_letter(completion) == want


def test_grade_choice():
  assert choice.grade_choice("Answer: B", "B")
  assert not choice.grade_choice("Answer: A", "B")
