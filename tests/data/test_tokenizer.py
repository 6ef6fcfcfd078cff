"""Tokenizers: Qwen3's folder formats prompts as its own template does; the tiny BPE matches it."""

import functools
import json
import os
import subprocess
import sys

import pytest

from grlo_jax import data
from grlo_jax.data import tokenizer as tokenizer_lib

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a haiku\nabout rain."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "2+2 = 4."}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "<think>\nsay hi\n</think>\n\nHello!"},
     {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "<think>bye</think>Goodbye."}],
    [{"role": "user", "content": "a"}, {"role": "system", "content": "mid-conversation system"},
     {"role": "user", "content": "  spaces and émojis 😀  "}],
]


@functools.lru_cache
def qwen3(folder):
  return data.load_tokenizer(folder)


@functools.lru_cache
def tiny(vocab_size=4096):
  return data.build_tiny_tokenizer(vocab_size)


def as_ids(out):
  return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_qwen3_prompt_ids_equal_apply_chat_template(shared_data):
  tok = qwen3(shared_data / "qwen3_tokenizer")
  recs = data.read_records(shared_data / "grlo_train_prompts.jsonl")[::10]
  convs = [r.messages for r in recs] + [tuple(c) for c in CONVERSATIONS]
  recs += [data.PromptRecord(index=1000 + i, data_source="t", messages=c, ability="", style="model",
                             ground_truth="", extra_info={}) for i, c in enumerate(convs[len(recs):])]
  got = data.encode_prompts(recs, tok, max_prompt_length=1 << 16)
  assert got.num_dropped == 0
  for prompt, conv in zip(got.prompts, convs):
    want = as_ids(tok.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=True))
    assert prompt.ids_p.tolist() == want
    assert prompt.text.endswith("<|im_start|>assistant\n")
  no_think = data.encode_prompts(recs[:3], tok, max_prompt_length=1 << 16,
                                 chat_template_kwargs={"enable_thinking": False})
  want = as_ids(tok.apply_chat_template(list(convs[0]), add_generation_prompt=True, enable_thinking=False))
  assert no_think.prompts[0].ids_p.tolist() == want
  assert no_think.prompts[0].text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": False}])
def test_tiny_template_renders_like_qwen3(shared_data, add_generation_prompt, kwargs):
  want_tok, got_tok = qwen3(shared_data / "qwen3_tokenizer"), tiny()
  for conv in CONVERSATIONS:
    opts = kwargs | {"add_generation_prompt": add_generation_prompt, "tokenize": False}
    assert got_tok.apply_chat_template(conv, **opts) == want_tok.apply_chat_template(conv, **opts)


def test_tiny_template_known_text():
  text = tiny().apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True, tokenize=False)
  assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n2+2 = 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                  "<|im_start|>assistant\n")


def test_special_ids(shared_data):
  q = data.special_ids(qwen3(shared_data / "qwen3_tokenizer"))
  assert q == data.SpecialIds(pad_id=151643, eos_ids=(151645, 151643), turn_end_ids=(151645, 198))
  t = tiny()
  ids = data.special_ids(t)
  assert (ids.pad_id, ids.eos_ids) == (0, (2, 0))
  assert t.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  assert (t.pad_token, t.eos_token, t.bos_token) == ("<|endoftext|>", "<|im_end|>", None)
  assert ids.turn_end_ids == (2, t.convert_tokens_to_ids("Ċ"))  # byte-level "\n"


@pytest.mark.parametrize("which", ["qwen3", "tiny"])
def test_turn_end_ids_close_an_assistant_turn(shared_data, which):
  tok = qwen3(shared_data / "qwen3_tokenizer") if which == "qwen3" else tiny()
  conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
          {"role": "user", "content": "Bye"}]
  text = tok.apply_chat_template(conv, tokenize=False)
  head, tail = text.split("Hello", 1)
  tail_ids = tok.encode(tail, add_special_tokens=False)
  turn_end = data.special_ids(tok).turn_end_ids
  assert tail_ids[:len(turn_end)] == list(turn_end)


def test_tiny_round_trips_text():
  tok = tiny()
  for text in ["What is 17 + 25? Put the final answer in \\boxed{}.", "héllo wörld 😀 12345\n\t  ok",
               "中文 and Ελληνικά", "<|im_start|>user\nhi<|im_end|>\n", "", "   \n\n  x"]:
    ids = tok.encode(text, add_special_tokens=False)
    assert max(ids, default=0) < 4096
    assert tok.decode(ids) == text


def test_tiny_prompts_tokenize_short():
  prompts = data.encode_prompts(data.read_records(data.TINY_PROMPTS), tiny(), max_prompt_length=64)
  assert prompts.num_dropped == 0
  lengths = sorted(len(p.ids_p) for p in prompts.prompts)
  assert lengths[len(lengths) // 2] < 40 and lengths[-1] < 64


def test_tiny_vocab_size_bounds_ids():
  small = data.build_tiny_tokenizer(300)
  assert len(small) <= 300
  texts = [m["content"] for r in data.read_records(data.TINY_PROMPTS) for m in r.messages]
  assert max(max(i) for i in small(texts)["input_ids"]) < 300
  assert len(tiny()) <= 4096
  with pytest.raises(ValueError, match="at least 259"):
    data.build_tiny_tokenizer(100)


def _tokenizer_json(tok):
  return tok.backend_tokenizer.to_str()


def test_tiny_build_is_deterministic():
  assert _tokenizer_json(data.build_tiny_tokenizer()) == _tokenizer_json(tiny())
  # A second process has other hash seeds; the vocabulary and merges must not depend on them.
  code = ("import sys; from grlo_jax.data import tokenizer as t; "
          "sys.stdout.write(t.build_tiny_tokenizer().backend_tokenizer.to_str())")
  other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONHASHSEED": "123",
                                           "PYTHONPATH": os.pathsep.join(sys.path)})
  assert json.loads(other.stdout) == json.loads(_tokenizer_json(tiny()))


def test_tiny_cache_reused(tmp_path, monkeypatch):
  first = data.load_tokenizer("tiny", cache_dir=tmp_path)
  folders = list(tmp_path.iterdir())
  assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()

  def no_training(*args):
    raise AssertionError("rebuilt despite the cache")

  monkeypatch.setattr(tokenizer_lib, "_train_tiny", no_training)
  again = data.load_tokenizer("tiny", cache_dir=tmp_path)
  assert list(tmp_path.iterdir()) == folders
  assert _tokenizer_json(again) == _tokenizer_json(first) == _tokenizer_json(tiny())
  assert again.chat_template == tokenizer_lib.CHATML_TEMPLATE
  assert (again.pad_token_id, again.eos_token_id) == (0, 2)
  conv = CONVERSATIONS[1]
  assert again.apply_chat_template(conv, tokenize=False) == tiny().apply_chat_template(conv, tokenize=False)
  with pytest.raises(AssertionError, match="rebuilt"):  # another size is another cache entry
    data.load_tokenizer("tiny:512", cache_dir=tmp_path)
