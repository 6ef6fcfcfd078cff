"""GPQA letter grading and the code benchmarks' reference solutions, on the real data.

GPQA's authors ask that its questions never appear in plain text: these tests compare counts
only, and items print as ids.
"""

import collections

from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import grading

# MBPP test-split items whose published reference code fails its own tests: none found.
MBPP_KNOWN_BROKEN: frozenset[str] = frozenset()


def test_gpqa_correct_letter_right_wrong_letter_wrong(shared_data):
  items = bm.load("gpqa_diamond", shared_data)
  assert len(items) == 198 and len({i.id for i in items}) == 198
  assert set(collections.Counter(i.answer for i in items)) == set("ABCD")
  right = grading.grade_many("gpqa_diamond", items,
                             [f"Thinking.\nAnswer: {i.answer}" for i in items])
  assert sum(g.correct for g in right) == 198
  shift = dict(zip("ABCD", "BCDA"))
  wrong = grading.grade_many("gpqa_diamond", items,
                             [f"Thinking.\nAnswer: {shift[i.answer]}" for i in items])
  assert sum(g.correct for g in wrong) == 0
  # The shuffle is fixed: loading again gives the same letters.
  assert [i.answer for i in bm.load("gpqa_diamond", shared_data)] == [i.answer for i in items]


def test_gpqa_item_repr_hides_text(shared_data):
  item = bm.load("gpqa_diamond", shared_data)[0]
  assert repr(item) == f"Item(gpqa_diamond/{item.id})"


def test_humaneval_canonical_solutions_pass_and_a_corrupted_one_fails(shared_data):
  items = bm.load("humaneval", shared_data)
  assert len(items) == 164
  completions = [i.tests["canonical_solution"] for i in items]
  completions.append(items[1].tests["canonical_solution"])  # item 1's body under item 0
  completions.append("    import sys\n    sys.exit(0)\n")  # exits before check() runs
  grades = grading.grade_many("humaneval", items + items[:2], completions)
  failed = [i.id for i, g in zip(items, grades) if not g.correct]
  assert failed == []
  assert [g.correct for g in grades[-2:]] == [False, False]


def test_humaneval_chat_style_whole_function_in_a_fence(shared_data):
  items = bm.load("humaneval", shared_data)[:3]
  fenced = [f"Here it is:\n```python\n{i.prompt}{i.tests['canonical_solution']}```\nDone."
            for i in items]
  assert all(g.correct for g in grading.grade_many("humaneval", items, fenced))


def test_mbpp_reference_code_passes_its_tests(shared_data):
  items = bm.load("mbpp", shared_data)
  assert [int(i.id) for i in items] == list(range(11, 511))
  grades = grading.grade_many("mbpp", items, [i.tests["code"] for i in items])
  failed = {i.id: g.extracted for i, g in zip(items, grades) if not g.correct}
  assert set(failed) == MBPP_KNOWN_BROKEN, failed
  assert items[0].prompt.count("[BEGIN]") == 4 and items[0].prompt.endswith("[BEGIN]\n")
