"""Math graders on the real data: gold answers grade right, a deranged answer column wrong."""

import random

import pytest

from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import grading

MATH_BENCHMARKS = ("math500", "minerva_math", "olympiadbench", "aime24", "aime25", "amc23")


def _derangement(n: int, seed: int) -> list[int]:
  rng = random.Random(seed)
  order = list(range(n))
  while any(i == j for i, j in enumerate(order)):
    rng.shuffle(order)
  return order


def _as_completion(answer: str) -> str:
  return f"Some reasoning first.\nSo the answer is $\\boxed{{{answer}}}$."


@pytest.mark.parametrize("name", MATH_BENCHMARKS)
def test_gold_answers_grade_right_and_deranged_answers_wrong(name, shared_data):
  items = bm.load(name, shared_data)
  gold = grading.grade_many(name, items, [_as_completion(i.answer) for i in items])
  order = _derangement(len(items), seed=0)
  wrong = grading.grade_many(name, items, [_as_completion(items[j].answer) for j in order])
  right_rate = sum(g.correct for g in gold) / len(items)
  wrong_rate = sum(g.correct for g in wrong) / len(items)
  assert right_rate >= 0.99, [i.id for i, g in zip(items, gold) if not g.correct]
  assert wrong_rate <= 0.02
  # What does pass under the derangement is a repeated gold answer ("2" for two questions).
  hits = [(items[i].answer, items[j].answer) for i, j in enumerate(order) if wrong[i].correct]
  assert all(a.replace(" ", "") == b.replace(" ", "") for a, b in hits), hits


def test_item_counts_and_prompt_formats(shared_data):
  counts = {b: len(bm.load(b, shared_data)) for b in MATH_BENCHMARKS}
  assert counts == {"math500": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30,
                    "aime25": 30, "amc23": 40}
  item = bm.load("math500", shared_data)[0]
  assert item.prompt.endswith("within \\boxed{}.\n\nSolution:\n")
  assert item.messages[0]["role"] == "user"
  assert item.messages[0]["content"].endswith(bm.MATH_INSTRUCTION)
  assert [i.answer for i in bm.load("aime24", shared_data)].count("25") == 1  # "025" read as 25
  assert bm.load("amc23", shared_data)[0].answer == "27"  # 27.0 in the file


def test_gsm8k_when_given(tmp_path):
  (tmp_path / "gsm8k.jsonl").write_text(
      '{"question": "Two plus two?", "answer": "2+2=4\\n#### 1,004"}\n', encoding="utf-8")
  (item,) = bm.load("gsm8k", tmp_path)
  assert item.answer == "1004"
  assert grading.grade("gsm8k", item, "It is 1,004.")
