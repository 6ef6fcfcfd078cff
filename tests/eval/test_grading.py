"""pass@k and aggregation."""

import math

import pytest

from grlo_jax.eval import grading


@pytest.mark.parametrize("n, c, k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (20, 19, 2), (5, 5, 5),
                                     (16, 1, 16)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
  want = 1.0 - math.comb(n - c, k) / math.comb(n, k)
  assert grading.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_needs_enough_samples():
  with pytest.raises(ValueError, match="pass@4"):
    grading.pass_at_k(3, 1, 4)


def test_aggregate():
  summary = grading.aggregate({"a": [True, False, False, False], "b": [True, True, True, True],
                               "c": [False] * 4}, ks=(1, 2, 4, 8))
  assert summary["n"] == 3 and summary["samples"] == 12
  assert summary["accuracy"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)
  assert summary["pass@1"] == pytest.approx(summary["accuracy"])
  assert summary["pass@4"] == pytest.approx(2 / 3)
  assert summary["pass@2"] == pytest.approx((0.5 + 1.0) / 3)
  assert "pass@8" not in summary  # only 4 samples per item
  assert grading.default_ks(4) == (1, 2, 4) and grading.default_ks(1) == (1,)


def test_strip_think():
  assert grading.strip_think("<think>\\boxed{1}</think>The answer is \\boxed{2}") == (
      "The answer is \\boxed{2}")
  assert grading.strip_think("no think tags \\boxed{3}") == "no think tags \\boxed{3}"
