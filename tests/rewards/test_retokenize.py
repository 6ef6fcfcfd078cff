"""Host re-tokenization for an RM with another tokenizer: Qwen3 policy, the tiny BPE as the RM's."""

import numpy as np
import pytest

from grlo_jax import data
from grlo_jax.rewards import retokenize
from tests.rewards.test_reward_model import RESPONSES, make_batch, qwen3_tokenizer, train_messages


def rm_template_rows(rm_tok, messages_b, texts):
  return [rm_tok(rm_tok.apply_chat_template(list(m) + [{"role": "assistant", "content": t}], tokenize=False),
                 add_special_tokens=False)["input_ids"] for m, t in zip(messages_b, texts)]


@pytest.fixture
def batch(shared_data):
  policy = qwen3_tokenizer(shared_data / "qwen3_tokenizer")
  messages_b = train_messages(shared_data / "grlo_train_prompts.jsonl", len(RESPONSES))
  _, _, resp_ids, resp_mask = make_batch(policy, messages_b)
  return policy, messages_b, resp_ids, resp_mask


def test_decode_responses_cuts_only_the_stop_token(batch):
  policy, _, resp_ids, resp_mask = batch
  texts = retokenize.decode_responses(resp_ids, resp_mask, policy)
  assert texts[0] == "Hello there! Here is a short guide."  # <|im_end|> cut
  assert texts[1] == "\n\nIt starts with blank lines.\nThen a second line."  # <|endoftext|> cut
  assert texts[3].startswith("<think>\n")  # special-looking tokens kept
  assert texts[5] == ""
  assert texts[8] == "\nLeading newline then text"  # truncated: whole


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_retokenize_with_another_tokenizer(batch, padding_side):
  policy, messages_b, resp_ids, resp_mask = batch
  rm_tok = data.load_tokenizer("tiny")
  assert rm_tok.get_vocab() != policy.get_vocab()
  texts = retokenize.decode_responses(resp_ids, resp_mask, policy)
  want = rm_template_rows(rm_tok, messages_b, texts)
  length = max(map(len, want)) + 3
  ids_bt, mask_bt = retokenize.retokenize_for_rm(messages_b, resp_ids, resp_mask, policy, rm_tok,
                                                 max_length=length, padding_side=padding_side)
  assert ids_bt.shape == mask_bt.shape == (len(want), length)
  assert ids_bt.dtype == mask_bt.dtype == np.int32
  for i, row in enumerate(want):
    n = len(row)
    real = slice(0, n) if padding_side == "right" else slice(length - n, length)
    assert ids_bt[i, real].tolist() == row
    assert mask_bt[i].sum() == n and mask_bt[i, real].all()
    assert rm_tok.decode(row).endswith("<|im_end|>\n")
  assert (ids_bt[mask_bt == 0] == rm_tok.pad_token_id).all()


def test_retokenize_truncates_the_prompt_from_the_left(batch):
  policy, messages_b, resp_ids, resp_mask = batch
  rm_tok = data.build_tiny_tokenizer()
  texts = retokenize.decode_responses(resp_ids, resp_mask, policy)
  want = rm_template_rows(rm_tok, messages_b, texts)
  ids_bt, _ = retokenize.retokenize_for_rm(messages_b, resp_ids, resp_mask, policy, rm_tok, max_length=24)
  assert any(len(row) > 24 for row in want)
  for i, row in enumerate(want):
    assert ids_bt[i].tolist()[:min(24, len(row))] == row[-24:]  # the tail survives, right-padded
  # A BOS at the start is kept in front of the kept tail.
  rm_tok.bos_token = "<|im_start|>"  # every rendering starts with it
  ids_bt, _ = retokenize.retokenize_for_rm(messages_b, resp_ids, resp_mask, policy, rm_tok, max_length=24)
  for i, row in enumerate(want):
    if len(row) > 24:
      assert ids_bt[i].tolist() == [rm_tok.bos_token_id] + row[-23:]
