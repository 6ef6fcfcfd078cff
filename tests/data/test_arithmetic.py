"""The synthetic arithmetic source: seeded, disjoint held-out split, valid GRLO records."""

import pytest

from grlo_jax import data
from grlo_jax.data import arithmetic


def test_splits_are_disjoint_and_cover_every_problem():
  train, test = set(arithmetic.problems("train")), set(arithmetic.problems("test"))
  assert not train & test
  assert len(train) + len(test) == 90 * 90
  assert 0.08 < len(test) / 8100 < 0.12  # about one in ten held out


def test_records_are_seeded_distinct_and_answer_checked():
  a = arithmetic.records("train", n=50, seed=1)
  assert a == arithmetic.records("train", n=50, seed=1)
  assert a != arithmetic.records("train", n=50, seed=2)
  assert len({r["extra_info"]["id"] for r in a}) == 50
  for r in a:
    x, y = r["extra_info"]["a"], r["extra_info"]["b"]
    assert r["reward_model"] == {"style": "rule", "ground_truth": str(x + y)}
    assert r["prompt"][0]["content"].startswith(f"What is {x} + {y}?")
    assert arithmetic.split_of(x, y) == "train"
  # The split of a problem does not depend on how many are drawn or the seed.
  assert {r["extra_info"]["id"] for r in arithmetic.records("test", seed=5)} == {
      f"{x}+{y}" for x, y in arithmetic.problems("test")}


def test_spec_through_read_records():
  recs = data.read_records("arithmetic:test:20:3,arithmetic:train:5")
  assert [r.index for r in recs] == list(range(25))
  assert all(r.style == "rule" and r.ground_truth for r in recs)
  assert recs[0].ground_truth == arithmetic.records("test", 20, 3)[0]["reward_model"]["ground_truth"]
  with pytest.raises(ValueError, match="has 7306 problems"):
    data.read_records("arithmetic:train:99999")
  with pytest.raises(ValueError, match="split must be one of"):
    data.read_records("arithmetic:valid")
  with pytest.raises(ValueError, match="must be integers"):
    data.read_records("arithmetic:test:many")
