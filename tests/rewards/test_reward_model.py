"""In-graph RM input vs the Qwen3 chat template re-tokenized, and the scores they give."""

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from grlo_jax import models
from grlo_jax.rewards import reward_model, retokenize
from tests.models import hf_fixtures

QWEN3_VOCAB = 151936  # the model's embedding rows (the tokenizer has 151669 ids)


@functools.cache
def qwen3_tokenizer(path):
  return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


@functools.cache
def train_messages(path, n):
  """The n shortest public training prompts' messages (plus a system-prompted one)."""
  with open(path) as f:
    msgs = [json.loads(line)["prompt"] for line in f]
  msgs.sort(key=lambda m: len(m[-1]["content"]))
  sys_user = [{"role": "system", "content": "You are a careful assistant."},
              {"role": "user", "content": "What is 6 x 7? Answer briefly."}]
  return [sys_user] + msgs[:n - 1]


# (response text, stop token text or None for a truncated response, cut to this many tokens or None)
RESPONSES = [
    ("Hello there! Here is a short guide.", "<|im_end|>", None),
    ("\n\nIt starts with blank lines.\nThen a second line.", "<|endoftext|>", None),
    ("A long answer that runs out of room before it can finish what it wanted to say", None, 9),
    ("<think>\nSix sevens are 42.\n</think>\n\nThe answer is 42.", "<|im_end|>", None),
    ("42", "<|im_end|>", None),
    ("", "<|im_end|>", None),  # the policy stopped at once: empty content
    ("def f(x):\n    return x * 2\n\nprint(f(21))", "<|im_end|>", None),
    ("<think>\nStill thinking about this one, it is a hard", None, None),  # open think, truncated
    ("\nLeading newline then text", None, None),  # truncated, starting with "\n"
]


def make_batch(tok, messages_b):
  """Left-padded prompt ids/mask [B, P] and right-padded responses [B, R] as the sampler gives."""
  # As data.encode_prompts: the rendered text tokenized without adding special tokens.
  prompts = [tok.encode(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                        add_special_tokens=False) for m in messages_b]
  responses = []
  for text, stop, cut in RESPONSES:
    ids = tok.encode(text, add_special_tokens=False)[:cut]
    responses.append(ids + ([tok.convert_tokens_to_ids(stop)] if stop else []))
  p = max(map(len, prompts)) + 2
  r = max(map(len, responses))
  b = len(prompts)
  prompt_ids, prompt_mask = np.full((b, p), tok.pad_token_id, np.int32), np.zeros((b, p), np.int32)
  resp_ids, resp_mask = np.full((b, r), tok.pad_token_id, np.int32), np.zeros((b, r), bool)
  for i, (pr, rs) in enumerate(zip(prompts, responses)):
    prompt_ids[i, p - len(pr):], prompt_mask[i, p - len(pr):] = pr, 1
    resp_ids[i, :len(rs)], resp_mask[i, :len(rs)] = rs, True
  return prompt_ids, prompt_mask, resp_ids, resp_mask


def template_ids(tok, messages_b, resp_ids, resp_mask, eos_ids):
  """What the RM's chat template gives for (messages, decoded response), tokenized."""
  texts = retokenize.decode_responses(resp_ids, resp_mask, tok, eos_ids)
  return [tok(tok.apply_chat_template(list(m) + [{"role": "assistant", "content": t}], tokenize=False),
              add_special_tokens=False)["input_ids"] for m, t in zip(messages_b, texts)]


def test_rm_template_ids_qwen3(shared_data):
  tok = qwen3_tokenizer(shared_data / "qwen3_tokenizer")
  tmpl = reward_model.rm_template_ids(tok)
  assert tmpl.turn_end_ids == (151645, 198)  # <|im_end|> \n
  assert tmpl.assistant_prefix_ids == (151667, 271, 151668, 271)  # <think> \n\n </think> \n\n
  assert tmpl.think_end_id == 151668
  assert tmpl.eos_ids == (151645, 151643) and tmpl.pad_id == 151643
  assert {198, 271, 1406} <= set(tmpl.newline_ids)
  assert all(set(tok.decode([i])) == {"\n"} for i in tmpl.newline_ids)
  # A prompt rendered with enable_thinking=False already ends in the empty think block.
  no_think = reward_model.rm_template_ids(tok, chat_template_kwargs={"enable_thinking": False})
  assert no_think.assistant_prefix_ids == () and no_think.think_end_id is None


@functools.cache
def qwen3_case(shared):
  """The Qwen3 tokenizer, conversations, template, sampler-like batch and its jitted RM input."""
  tok = qwen3_tokenizer(shared / "qwen3_tokenizer")
  messages_b = train_messages(shared / "grlo_train_prompts.jsonl", len(RESPONSES))
  tmpl = reward_model.rm_template_ids(tok)
  batch = make_batch(tok, messages_b)
  ids_bt, mask_bt = jax.jit(tmpl.build)(*batch)
  return tok, messages_b, tmpl, batch, ids_bt, mask_bt


def test_in_graph_input_equals_chat_template(shared_data):
  tok, messages_b, tmpl, (prompt_ids, _, resp_ids, resp_mask), ids_bt, mask_bt = qwen3_case(shared_data)
  b, p = prompt_ids.shape
  assert ids_bt.shape == (b, p + len(tmpl.assistant_prefix_ids) + resp_ids.shape[1] + 2)
  assert ids_bt.shape[1] == tmpl.input_length(p, resp_ids.shape[1])
  assert ids_bt.dtype == jnp.int32
  ids_bt, mask_bt = np.asarray(ids_bt), np.asarray(mask_bt)
  want = template_ids(tok, messages_b, resp_ids, resp_mask, tmpl.eos_ids)
  got = reward_model.compact_rows(ids_bt, mask_bt)
  for i in range(b):
    assert got[i] == want[i], (i, tok.decode(got[i]), tok.decode(want[i]))
  # Contiguous: left padding, real tokens, right padding; pads carry pad_id.
  for m in mask_bt:
    real = np.flatnonzero(m)
    assert real[-1] - real[0] + 1 == len(real)
  assert (ids_bt[mask_bt == 0] == tmpl.pad_id).all()


def test_in_graph_score_equals_retokenized_score(shared_data, tmp_path):
  tok, messages_b, _, (_, _, resp_ids, resp_mask), ids_bt, mask_bt = qwen3_case(shared_data)
  cfg = hf_fixtures.qwen3_config(vocab_size=QWEN3_VOCAB, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 head_dim=8, num_labels=1, pad_token_id=tok.pad_token_id)
  hf = hf_fixtures.save(transformers.Qwen3ForSequenceClassification, cfg, tmp_path)
  scorer = retokenize.make_rm_scorer(models.load_pretrained(tmp_path, dtype=jnp.float32))

  in_graph_b = scorer(ids_bt, mask_bt)
  re_ids_bt, re_mask_bt = retokenize.retokenize_for_rm(messages_b, resp_ids, resp_mask, tok, tok,
                                                       max_length=ids_bt.shape[1])
  retok_b = scorer(re_ids_bt, re_mask_bt)  # same shapes: no second compile
  assert in_graph_b.dtype == jnp.float32 and in_graph_b.shape == (len(RESPONSES),)
  np.testing.assert_allclose(np.asarray(in_graph_b), np.asarray(retok_b), atol=1e-5, rtol=0)
  assert np.ptp(np.asarray(retok_b)) > 1e-3  # the rows really differ
  # And both are what transformers scores on the re-tokenized (right-padded) input.
  want_b = hf_fixtures.hf_forward(hf, re_ids_bt.astype(np.int64), re_mask_bt.astype(np.int64))[:, 0]
  np.testing.assert_allclose(np.asarray(retok_b), want_b, atol=1e-4, rtol=1e-4)


def test_build_rm_input_by_hand():
  """Stop token cut, leading newline ids dropped, own think block skips the prefix, gaps padded."""
  eos, pad, nl, think_end = (9,), 0, (7,), 8
  prompt_ids = np.array([[0, 1, 2], [3, 4, 5], [0, 0, 6]])
  prompt_mask = (prompt_ids != 0).astype(np.int32)
  resp_ids = np.array([[11, 12, 9, 0], [7, 7, 13, 14], [8, 15, 9, 0]])
  resp_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]], bool)
  build = functools.partial(reward_model.build_rm_input, turn_end_ids=(21, 22), pad_id=pad, eos_ids=eos,
                            assistant_prefix_ids=(31, 32), newline_ids=nl, think_end_id=think_end)
  ids, mask = jax.jit(build)(prompt_ids, prompt_mask, resp_ids, resp_mask)
  np.testing.assert_array_equal(ids, [[0, 1, 2, 31, 32, 11, 12, 21, 22, 0, 0],
                                      [3, 4, 5, 31, 32, 13, 14, 21, 22, 0, 0],  # truncated, "\n"s cut
                                      [0, 0, 6, 8, 15, 21, 22, 0, 0, 0, 0]])  # own think: no prefix
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
                                       [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
                                       [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]])


def test_score_with_rm_rejects_other_heads():
  lm = types.SimpleNamespace(cfg=models.ModelConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                                    num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4))
  with pytest.raises(ValueError, match="score head"):
    reward_model.score_with_rm(lm, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
