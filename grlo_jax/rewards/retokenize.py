"""Reward-model input for an RM with another tokenizer (the paper's Skywork Llama-3.1 RM).

Between sampling and scoring the responses go to the host: decoded with the policy's tokenizer,
formatted with the RM's own chat template as `messages + [{"role": "assistant", "content":
response}]` (no generation prompt, as the RM was trained and as Skywork's model card scores),
tokenized by the RM's tokenizer and padded to a fixed length so that the jitted RM forward
compiles once:

  text_b = decode_responses(roll.tokens, roll.mask, policy_tok, eos_ids)
  ids_bt, mask_bt = retokenize_for_rm(batch["messages_b"], roll.tokens, roll.mask, policy_tok,
                                      rm_tok, max_length=4096)
  score_b = make_rm_scorer(rm_model)(ids_bt, mask_bt)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from grlo_jax.rewards.reward_model import score_with_rm

log = logging.getLogger(__name__)


def decode_responses(response_ids_br: Any, response_mask_br: Any, policy_tokenizer: Any,
                     eos_ids: Sequence[int] | None = None, *,
                     skip_special_tokens: bool = False) -> list[str]:
  """Each response's text, its final stop token (one of `eos_ids`) cut; a truncated one is whole.

  Special tokens are kept by default (a `<think>` the policy wrote is part of what the RM
  judges); the stop token is dropped as an id, not by matching text, so a response that spells
  "<|im_end|>" out of ordinary pieces keeps them. `eos_ids` default: `data.special_ids`'s.
  """
  if eos_ids is None:
    from grlo_jax.data import special_ids  # lazy: keeps this module's import light
    eos_ids = special_ids(policy_tokenizer).eos_ids
  eos = {int(i) for i in eos_ids}
  ids_br, mask_br = np.asarray(response_ids_br), np.asarray(response_mask_br).astype(bool)
  kept = []
  for ids, m in zip(ids_br, mask_br):
    row = ids[m].tolist()
    if row and row[-1] in eos:
      row = row[:-1]
    kept.append(row)
  return policy_tokenizer.batch_decode(kept, skip_special_tokens=skip_special_tokens,
                                       clean_up_tokenization_spaces=False)


def retokenize_for_rm(messages_b: Sequence[Sequence[Mapping[str, str]]], response_ids_br: Any,
                      response_mask_br: Any, policy_tokenizer: Any, rm_tokenizer: Any,
                      max_length: int, *, eos_ids: Sequence[int] | None = None,
                      padding_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
  """RM ids and mask [B, max_length] (int32, numpy) for the conversations plus the responses.

  The RM template is rendered as text (`tokenize=False`) and tokenized without adding special
  tokens, since the template already writes any BOS (Llama-3.1's `<|begin_of_text|>`).
  Padding (the RM's pad id, or 0 without one; mask 0) goes on `padding_side`. A row longer
  than `max_length` loses tokens from the LEFT, i.e. from the start of the prompt, keeping a
  leading BOS: the response and the turn's closing tokens, where the score is read, survive.
  Each truncation is logged.
  """
  if padding_side not in ("left", "right"):
    raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
  responses = decode_responses(response_ids_br, response_mask_br, policy_tokenizer, eos_ids)
  if len(messages_b) != len(responses):
    raise ValueError(f"{len(messages_b)} conversations for {len(responses)} responses")
  texts = [rm_tokenizer.apply_chat_template(
      [dict(m) for m in msgs] + [{"role": "assistant", "content": resp}], tokenize=False)
      for msgs, resp in zip(messages_b, responses)]
  rows = rm_tokenizer(texts, add_special_tokens=False)["input_ids"]
  pad_id = rm_tokenizer.pad_token_id if rm_tokenizer.pad_token_id is not None else 0
  bos_id = rm_tokenizer.bos_token_id
  ids_bt = np.full((len(rows), max_length), pad_id, np.int32)
  mask_bt = np.zeros((len(rows), max_length), np.int32)
  for b, row in enumerate(rows):
    if len(row) > max_length:
      log.warning("RM input row %d: %d tokens > max_length %d, cut from the left of the prompt",
                  b, len(row), max_length)
      keep_bos = bos_id is not None and row[0] == bos_id and max_length > 1
      row = ([bos_id] if keep_bos else []) + row[len(row) - max_length + keep_bos:]
    n = len(row)
    cols = slice(0, n) if padding_side == "right" else slice(max_length - n, max_length)
    ids_bt[b, cols] = row
    mask_bt[b, cols] = 1
  return ids_bt, mask_bt


def make_rm_scorer(rm_model: Any) -> Callable[[Any, Any], jax.Array]:
  """A jitted `scorer(ids_bt, mask_bt) -> score_b` (float32) for `rm_model`, compiled per shape."""
  graphdef, state = nnx.split(rm_model)

  @jax.jit
  def score(state: nnx.State, ids_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
    return score_with_rm(nnx.merge(graphdef, state), ids_bt, mask_bt)

  return lambda ids_bt, mask_bt: score(state, ids_bt, mask_bt)
