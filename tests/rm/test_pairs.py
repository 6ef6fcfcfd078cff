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


def _last_number(text):
  return next((w for w in reversed(text.replace(".", " ").replace("{", " ").replace("}", " ").split())
               if w.isdigit()), None)


def test_edit_pairs_change_only_the_answer_and_regrade():
  texts = [["1 + 4 = 5.", "1 + 4 = 6, so \\boxed{6}", "no idea"], ["2 + 2 = 5", "2 + 2 = 3 I guess", "2 + 2 = 5"],
           ["so 12 and 12"]]
  trunc = [[False, False, False], [False, True, False], [False]]
  truths = ["5", "4", "24"]
  same = lambda a, g: a == g  # noqa: E731
  graded = pairs_lib.grade_samples(texts, trunc, truths, _last_number, same)
  recs, counts = pairs_lib.edit_pairs(["q0", "q1", "q2"], graded, ["a", "b", "c"], truths, _last_number, same,
                                      per_prompt=4)
  by_id = {}
  for r in recs:
    by_id.setdefault(r["extra_info"]["id"], []).append(r)
  # q0: its correct sample perturbed, its wrong one corrected (the boxed answer, the last "6"); "no idea" has no answer.
  assert [r["extra_info"]["edit"] for r in by_id["a"]] == ["perturbed", "corrected"]
  assert by_id["a"][0]["chosen"] == "1 + 4 = 5." and by_id["a"][0]["rejected"] != "1 + 4 = 5."
  assert by_id["a"][0]["rejected"].startswith("1 + 4 = ") and _last_number(by_id["a"][0]["rejected"]) != "5"
  assert by_id["a"][1] == {"prompt": "q0", "chosen": "1 + 4 = 6, so \\boxed{5}", "rejected": "1 + 4 = 6, so \\boxed{6}",
                           "extra_info": {"id": "a", "edit": "corrected", "rejected_kind": "wrong_answer",
                                          "rejected_answer": "6"}}
  # q1: no correct sample, so corrected pairs only; the duplicate text gives one pair; truncation kept as the kind.
  assert sorted(r["chosen"] for r in by_id["b"]) == ["2 + 2 = 4", "2 + 2 = 4 I guess"]
  assert {r["extra_info"]["rejected_kind"] for r in by_id["b"]} == {"wrong_answer", "truncated"}
  # q2: "12" occurs twice; only the last (the answer) is replaced.
  assert [r["chosen"] for r in by_id["c"]] == ["so 12 and 24"]
  assert counts == {"pairs_perturbed": 1, "pairs_corrected": 4}
  assert len(pairs_lib.edit_pairs(["q0"], graded[:1], ["a"], truths[:1], _last_number, same, per_prompt=1)[0]) == 1


def test_edit_pairs_drop_edits_the_verifier_grades_otherwise():
  graded = pairs_lib.grade_samples([["it is 7"]], [[False]], ["8"], _last_number, lambda a, g: a == g)
  recs, counts = pairs_lib.edit_pairs(["q"], graded, ["a"], ["8"], _last_number, lambda a, g: False, per_prompt=2)
  assert recs == [] and counts == {"edits_dropped": 1}


def test_nearby_wrong_is_never_the_truth():
  import random
  rng = random.Random(0)
  assert all(pairs_lib.nearby_wrong("10", rng) not in (None, "10") for _ in range(50))
  assert pairs_lib.nearby_wrong("0", rng) in {"1", "2", "10"} and pairs_lib.nearby_wrong("x+1", rng) is None


def test_replace_answer_is_standalone():
  assert pairs_lib.replace_answer("148 or 48. Then 4.48", "48", "5") == "148 or 5. Then 4.48"
  assert pairs_lib.replace_answer("no such", "48", "5") is None


def test_samples_file_mines_again_without_sampling(tmp_path):
  """`make_pairs --samples_input` on a `write_samples` file writes the pairs that mining the same
  samples in memory gives; a bad line is named."""
  import json
  import os
  import pathlib
  import subprocess
  import sys

  from grlo_jax.rewards.verifiers import math as mv

  prompts, ids, truths = ["What is 2 + 3?", "What is 4 + 4?"], ["2+3", "4+4"], ["5", "8"]
  texts = [["2 + 3 = 5", "2 + 3 = 6", "The answer is 2 + 3."], ["4 + 4 = 9", "4 + 4 = 8. So"]]
  trunc = [[False, False, False], [False, True]]
  path = tmp_path / "s.jsonl"
  pairs_lib.write_samples(path, prompts, texts, trunc, truths, ids)
  assert pairs_lib.read_samples(path) == (prompts, texts, trunc, truths, ids)
  graded = pairs_lib.grade_samples(texts, trunc, truths, mv.extract_answer, mv.answers_match)
  want, _ = pairs_lib.mine_pairs(prompts, graded, ids, max_pairs_per_prompt=4)
  assert len(want) == 3  # 5 over 6 and over the restated question; 8 (truncated) over 9
  out = tmp_path / "p.jsonl"
  root = pathlib.Path(__file__).resolve().parents[2]
  run = subprocess.run([sys.executable, "launch/make_pairs.py", f"--samples_input={path}", f"--output={out}",
                        "--max_pairs_per_prompt=4"], cwd=root, capture_output=True, text=True, check=False,
                       env=os.environ | {"PYTHONPATH": str(root)})  # this checkout's grlo_jax

  assert run.returncode == 0, run.stderr[-2000:]
  assert [json.loads(line) for line in out.read_text().splitlines()] == want
  assert json.loads((tmp_path / "p.jsonl.stats.json").read_text())["samples_input"] == str(path)

  path.write_text(path.read_text() + '{"id": "x", "prompt": "q", "answer": "1", "samples": ["1"]}\n')
  with pytest.raises(ValueError, match=r"s.jsonl:3: key 'truncated' missing"):
    pairs_lib.read_samples(path)
