"""Chat-formatted, tokenized prompts, with over-long ones filtered out (verl's filter_overlong_prompts).

All prompts are encoded up front: RL prompt sets are small (GRLO: ~5K), and knowing the kept
count before training gives exact steps per epoch, the same on every host.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import transformers

from grlo_jax.data import records as records_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
  """A record with its chat-formatted text and unpadded token ids `ids_p` (int32)."""

  record: records_lib.PromptRecord
  text: str
  ids_p: np.ndarray


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """The prompts kept for training, and what padding them needs."""

  prompts: tuple[EncodedPrompt, ...]
  num_read: int
  max_prompt_length: int
  pad_id: int

  @property
  def num_dropped(self) -> int:
    return self.num_read - len(self.prompts)


def format_prompts(
    tokenizer: transformers.PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
  """Renders each conversation with the chat template and the assistant generation prompt."""
  if not conversations:
    return []
  return tokenizer.apply_chat_template(
      [list(c) for c in conversations], add_generation_prompt=True, tokenize=False,
      **(chat_template_kwargs or {}))


def encode_prompts(
    records: Sequence[records_lib.PromptRecord],
    tokenizer: transformers.PreTrainedTokenizerBase,
    *,
    max_prompt_length: int,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> PromptSet:
  """Formats and tokenizes `records`, dropping (and logging) those over `max_prompt_length` tokens.

  The ids equal `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
  tokenize=True)`: the rendered text is tokenized without adding special tokens.
  """
  texts = format_prompts(tokenizer, [r.messages for r in records], chat_template_kwargs)
  ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
  kept = tuple(EncodedPrompt(record=r, text=t, ids_p=np.asarray(i, np.int32))
               for r, t, i in zip(records, texts, ids) if len(i) <= max_prompt_length)
  prompt_set = PromptSet(prompts=kept, num_read=len(records), max_prompt_length=max_prompt_length,
                         pad_id=int(tokenizer.pad_token_id))
  log.info("prompts: kept %d of %d, dropped %d longer than %d tokens", len(kept), len(records),
           prompt_set.num_dropped, max_prompt_length)
  return prompt_set
