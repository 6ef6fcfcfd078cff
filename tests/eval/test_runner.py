"""Generate-and-grade runner: fixed-shape batches, greedy parity with an unpadded run, pass@k."""

import math

import numpy as np
import pytest
import torch
import transformers

from grlo_jax import data, models
from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import grading
from grlo_jax.eval import runner
from tests.models import hf_fixtures as fx


def save_tiny_qwen3(path):
  """A tiny random Qwen3 HF folder with the tiny tokenizer (4096 ids) saved beside it."""
  hf = fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(vocab_size=4096), path)
  data.load_tokenizer("tiny").save_pretrained(path)
  return hf


def _item(i: int, problem: str) -> bm.Item:
  return bm.Item("math500", f"q{i}", f"Problem:\n{problem}\n\nSolution:\n",
                 ({"role": "user", "content": problem},), "1")


def test_bucket_length_is_a_power_of_two_at_least_the_minimum():
  assert [runner.bucket_length(n, minimum=16) for n in (0, 1, 16, 17, 100, 128, 129)] == [
      16, 16, 16, 32, 128, 128, 256]
  assert runner.bucket_length(3, minimum=1) == 4
  assert runner.bucket_length(513) == 1024 and runner.bucket_length(20) == runner.MIN_PROMPT_BUCKET


def test_left_pad_right_aligns_and_fills_the_batch_with_a_real_row():
  ids_bp, mask_bp = runner.left_pad([np.array([5, 6, 7]), np.array([8])], 4, 3, pad_id=0)
  np.testing.assert_array_equal(ids_bp, [[0, 5, 6, 7], [0, 0, 0, 8], [0, 5, 6, 7]])
  np.testing.assert_array_equal(mask_bp, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]])
  with pytest.raises(ValueError, match="does not fit"):
    runner.left_pad([np.arange(5)], 4, 1, pad_id=0)


def test_batches_with_padding_match_unpadded_greedy_runs_in_item_order(tmp_path):
  hf = save_tiny_qwen3(tmp_path)
  model = models.load_pretrained(tmp_path)
  tok = data.load_tokenizer(tmp_path)
  items = [_item(0, "What is 2 + 2?"), _item(1, "Solve x^2 = 9 for the positive root x, please."),
           _item(2, "Hi")]
  # 3 items x 2 samples in batches of 4: the second batch holds item 2 and two filler rows,
  # and every prompt is left-padded to one bucket.
  got = runner.generate_completions(model, tok, items, max_new_tokens=6, temperature=0.0,
                                    num_samples=2, batch_size=4, chat=True)
  eos = data.special_ids(tok).eos_ids
  want = []
  for text in runner.prompt_texts(tok, items, chat=True):
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # one row, no padding
      new = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                        do_sample=False, eos_token_id=list(eos), pad_token_id=fx.PAD)[0, ids.shape[1]:]
    new = new.tolist()
    stop = next((n + 1 for n, t in enumerate(new) if t in eos), len(new))
    want.append(tok.decode(new[:stop], skip_special_tokens=True))
  assert len(set(want)) == 3  # distinct completions, so an order mix-up would show
  assert got == [[w, w] for w in want]


def test_base_prompts_are_cut_at_their_stop_sequence():
  assert runner.cut_at_stop("math500", "x = \\boxed{2}.\n\nProblem:\nNext") == "x = \\boxed{2}.\n"
  assert runner.cut_at_stop("humaneval", "    return 1\n\ndef g():") == "    return 1\n"
  assert runner.cut_at_stop("mbpp", "def f():\n  pass\n[DONE]\nYou are") == "def f():\n  pass\n"


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_the_closed_form(n):
  for c in range(n + 1):
    for k in range(1, n + 1):
      want = 1.0 - math.comb(n - c, k) / math.comb(n, k)
      assert grading.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)


def test_pass_at_k_is_added_for_any_sample_count():
  correct = {"a": [True, False, False], "b": [False, False, False], "c": [True, True, False]}
  report = {"benchmarks": {"aime24": grading.aggregate(correct, grading.default_ks(3))},
            "items": [{"benchmark": "aime24", "id": i, "correct": v, "extracted": [None] * 3}
                      for i, v in correct.items()]}
  assert "pass@3" not in report["benchmarks"]["aime24"]
  summary = runner.with_pass_at_k(report)["benchmarks"]["aime24"]
  assert summary["pass@3"] == pytest.approx((1 + 0 + 1) / 3)
  assert summary["pass@2"] == pytest.approx((1 - 1 / 3 + 0 + 1) / 3)  # C(2,2)/C(3,2) = 1/3


def test_item_records_withhold_gpqa_completions():
  report = {"items": [{"benchmark": "gpqa_diamond", "id": "rec1", "correct": [True], "extracted": ["A"]},
                      {"benchmark": "aime24", "id": "7", "correct": [False], "extracted": ["3"]}]}
  completions = {("gpqa_diamond", "rec1"): ["Answer: A"], ("aime24", "7"): ["\\boxed{3}"]}
  assert runner.item_records(report, completions) == [
      {"benchmark": "gpqa_diamond", "id": "rec1", "correct": [True], "extracted": ["A"]},
      {"benchmark": "aime24", "id": "7", "completions": ["\\boxed{3}"], "correct": [False],
       "extracted": ["3"]}]
