"""Tokenizers: a Hugging Face folder (Qwen3's), a GGUF file's metadata, or a tiny byte-level BPE
built offline at start-up.

The tiny tokenizer exists so that a fresh machine with no network and no weights can run the
whole stack: it is trained in well under a second on the prompts shipped in
`tiny_prompts.jsonl`, carries Qwen3's chat special tokens and a ChatML template that renders
plain conversations exactly as Qwen3's does, and is cached in a folder the caller names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import tempfile

import tokenizers
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from grlo_jax.data import records as records_lib

TINY_PROMPTS = pathlib.Path(__file__).with_name("tiny_prompts.jsonl")
PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
# Qwen2/Qwen3's pre-tokenizer split (digits one by one, contractions, runs of punctuation).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_TINY_SPEC = re.compile(r"tiny(?::(\d+))?")
# Bump when the build recipe changes, so that stale caches are not reused.
_TINY_RECIPE = 1

# Qwen3's chat template restricted to system / user / assistant / tool messages without tools
# or tool calls: for those it renders the same text (think block on the last assistant turn
# after the last user query, `</think>` splitting, `enable_thinking=False`).
CHATML_TEMPLATE = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(found=false, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- if not ns.found and message.role == 'user' and not (message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.found = true %}
        {%- set ns.last_query_index = (messages|length - 1) - loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- set reasoning = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids the RL step needs.

  pad_id: left-padding of prompts and right-padding of responses.
  eos_ids: any of these ends a response. `<|im_end|>` closes a chat turn; a base model's
    `<|endoftext|>` (its `eos_token`) ends a document, and a base model may emit either.
  turn_end_ids: what the chat template writes after an assistant message's text
    ("<|im_end|>", "\\n"); the reward-model input is the prompt + response + these.
  """

  pad_id: int
  eos_ids: tuple[int, ...]
  turn_end_ids: tuple[int, ...]


def load_tokenizer(
    path_or_spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
) -> transformers.PreTrainedTokenizerFast:
  """Loads a Hugging Face tokenizer folder, a GGUF file's tokenizer (or that of the one `.gguf` in
  a folder without `tokenizer_config.json`), or builds the tiny one for the spec "tiny[:VOCAB]".

  Folders load offline. The tiny tokenizer (default vocabulary 4096) is cached under
  `cache_dir` when given; a folder literally named "tiny" needs a path such as "./tiny".
  """
  if m := _TINY_SPEC.fullmatch(str(path_or_spec)):
    return build_tiny_tokenizer(int(m.group(1) or 4096), cache_dir=cache_dir)
  path = pathlib.Path(path_or_spec)
  if path.suffix == ".gguf" or (path.is_dir() and not (path / "tokenizer_config.json").exists()
                                and any(path.glob("*.gguf"))):
    return load_gguf_tokenizer(path)
  tok = transformers.AutoTokenizer.from_pretrained(os.fspath(path_or_spec), local_files_only=True)
  if not isinstance(tok, transformers.PreTrainedTokenizerFast):
    raise TypeError(
        f"{path_or_spec}: expected a fast tokenizer (tokenizer.json), got {type(tok).__name__}")
  if tok.pad_token_id is None:
    tok.pad_token = PAD if PAD in tok.get_vocab() else tok.eos_token
  return tok


# llama.cpp pre-tokenizer names whose split transformers' GGUF converter does not know (it then
# falls back to GPT-2's): the pre-tokenizer of the model's own tokenizer.json.
_GGUF_PRE_TOKENIZERS = {
    # SmolLM / SmolLM2: every digit on its own, then GPT-2's byte-level split.
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
}


def load_gguf_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
  """The tokenizer and chat template a GGUF file's metadata describes (transformers builds it)."""
  from grlo_jax.models import gguf  # lazy: models is heavy

  file = gguf.find_gguf(path)
  if file is None:
    raise FileNotFoundError(f"{path}: no .gguf file")
  file = pathlib.Path(os.fspath(file))
  tok = transformers.AutoTokenizer.from_pretrained(os.fspath(file.parent), gguf_file=file.name,
                                                   local_files_only=True)
  pre = gguf.metadata(gguf.open_reader(file), ["tokenizer.ggml.pre"]).get("tokenizer.ggml.pre")
  if pre in _GGUF_PRE_TOKENIZERS:
    tok.backend_tokenizer.pre_tokenizer = _GGUF_PRE_TOKENIZERS[pre]()
  if tok.pad_token_id is None:
    tok.pad_token = PAD if PAD in tok.get_vocab() else tok.eos_token
  return tok


def build_tiny_tokenizer(
    vocab_size: int = 4096, *, cache_dir: str | os.PathLike | None = None,
    corpus: str | os.PathLike = TINY_PROMPTS,
) -> transformers.PreTrainedTokenizerFast:
  """Trains (or reloads from `cache_dir`) a byte-level BPE of at most `vocab_size` ids on `corpus`.

  Deterministic: the same corpus and size give the same vocabulary and merges, byte for byte.
  Ids 0, 1, 2 are `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos); the 256 byte
  symbols follow, so any text encodes and decodes back.
  """
  min_size = len(SPECIAL_TOKENS) + 256
  if vocab_size < min_size:
    raise ValueError(f"vocab_size must be at least {min_size}, got {vocab_size}")
  if cache_dir is None:
    return _train_tiny(corpus, vocab_size)
  # Keyed by everything the build reads, so a changed corpus or recipe never reuses a stale folder.
  key = hashlib.sha256(f"{_TINY_RECIPE}|{vocab_size}|{CHATML_TEMPLATE}|".encode()
                       + pathlib.Path(corpus).read_bytes()).hexdigest()[:16]
  folder = pathlib.Path(cache_dir) / f"tiny_bpe_{vocab_size}_{key}"
  if not (folder / "tokenizer.json").is_file():
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Save beside the target and rename, so concurrent builders never see half a folder.
    tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    _train_tiny(corpus, vocab_size).save_pretrained(tmp)
    try:
      tmp.rename(folder)
    except OSError:  # another process won the race; its folder is identical
      shutil.rmtree(tmp, ignore_errors=True)
  return load_tokenizer(folder)


def special_ids(tokenizer: transformers.PreTrainedTokenizerBase) -> SpecialIds:
  """Pad, end-of-sequence and turn-closing ids of a ChatML tokenizer (Qwen3's or the tiny one)."""
  vocab = tokenizer.get_vocab()
  if IM_END not in vocab:
    raise ValueError(f"tokenizer has no {IM_END} token; only ChatML tokenizers are supported")
  eos = [vocab[IM_END], tokenizer.eos_token_id, vocab.get(PAD)]
  turn_end_ids = tuple(tokenizer.encode(IM_END + "\n", add_special_tokens=False))
  if len(turn_end_ids) != 2 or turn_end_ids[0] != vocab[IM_END]:
    raise ValueError(f"{IM_END!r} + newline encodes to {turn_end_ids}, not two tokens")
  return SpecialIds(pad_id=int(tokenizer.pad_token_id),
                    eos_ids=tuple(dict.fromkeys(int(i) for i in eos if i is not None)),
                    turn_end_ids=turn_end_ids)


def _train_tiny(corpus: str | os.PathLike, vocab_size: int) -> transformers.PreTrainedTokenizerFast:
  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.normalizer = normalizers.NFC()
  bpe.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  bpe.decoder = decoders.ByteLevel()
  bpe.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  # Role names and the template's think markers are trained on too, so that chat scaffolding
  # costs few tokens; the special tokens themselves are never in the training text.
  texts = ["system\nuser\nassistant\n<think>\n\n</think>\n\n"]
  texts += [m["content"] for r in records_lib.read_jsonl(corpus) for m in r.messages]
  bpe.train_from_iterator(texts, trainer=trainer)
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=bpe, bos_token=None, eos_token=IM_END, pad_token=PAD, unk_token=None,
      chat_template=CHATML_TEMPLATE, model_max_length=1 << 17, clean_up_tokenization_spaces=False)
  assert len(tok) <= vocab_size, (len(tok), vocab_size)
  return tok
