"""Pair mining from verifier-graded samples, and the arithmetic-pairs: spec."""

import pytest

from grlo_jax.data import arithmetic
from grlo_jax.data import preferences
from grlo_jax.rm import pairs as pairs_lib


def test_arithmetic_pairs_spec_is_the_arithmetic_split():
  assert arithmetic.parse_spec("arithmetic-pairs:train:50:3") == arithmetic.parse_spec("arithmetic:train:50:3")
  assert arithmetic.is_pairs_spec("arithmetic-pairs:test") and not arithmetic.is_spec("arithmetic-pairs:test")
  with pytest.raises(ValueError, match="split"):
    arithmetic.parse_spec("arithmetic-pairs:dev:5")


def test_mine_pairs_correct_over_each_wrong_kind():
  texts = [["so 5", "it is 6", "I think", "1 + 4 = 5. The answer is"], ["no idea", "7"], ["5", "5"]]
  trunc = [[False, False, False, True], [False, False], [False, False]]
  graded = pairs_lib.grade_samples(texts, trunc, ["5", "3", "5"], lambda t: next(
      (w for w in reversed(t.replace(".", " ").split()) if w.isdigit()), None), lambda a, g: a == g)
  assert [pairs_lib.kind(s) for s in graded[0]] == ["correct", "wrong_answer", "no_answer", "correct"]
  recs, counts = pairs_lib.mine_pairs(["q0", "q1", "q2"], graded, ["a", "b", "c"], max_pairs_per_prompt=3)
  assert counts["pairs"] == 2 and counts["prompts_no_correct"] == 1 and counts["prompts_all_correct"] == 1
  assert {r["extra_info"]["rejected_kind"] for r in recs} == {"wrong_answer", "no_answer"}
  assert all(r["chosen"] in ("so 5", "1 + 4 = 5. The answer is") for r in recs)
  parsed = [preferences.parse_pair(r, index=i, where=f"x:{i}") for i, r in enumerate(recs)]  # readable as written
  assert parsed[0].chosen[0] == {"role": "user", "content": "q0"}
