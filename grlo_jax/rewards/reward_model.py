"""Reward-model input built in-graph when the RM shares the policy's tokenizer, and its score.

Skywork-Reward-V2's Qwen3 models share Qwen3's tokenizer, so the RM input is a token splice of
ids already on the device: no decode, no host round trip. What the RM was trained on is its chat
template applied to `prompt messages + [{"role": "assistant", "content": response}]` with no
generation prompt. The policy prompt is the same messages with the generation prompt
`<|im_start|>assistant\\n`, so the RM text is

  policy prompt + assistant_prefix_ids + response (stop token cut) + turn_end_ids

where, for Qwen3's template, `assistant_prefix_ids` is NOT empty: the template renders the last
assistant turn (one after the last user message) as

  <|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content.lstrip("\\n")}<|im_end|>\\n

with reasoning = "" unless the content holds `</think>`. So it inserts an empty think block
`<think>\\n\\n</think>\\n\\n` (ids 151667, 271, 151668, 271) whatever `enable_thinking` says
(that flag only changes the generation prompt), strips leading newlines off the response, and
re-renders a response that carries its own `<think>...</think>` block instead of adding one.
`rm_template_ids` finds all of this by rendering probe conversations with the tokenizer once on
the host, and `build_rm_input` reproduces it on ids:

- the final token is dropped when it is a stop token (`eos_ids`); a response without one was
  truncated and is kept whole;
- leading newline-only tokens are dropped (the template's `lstrip("\\n")`);
- `assistant_prefix_ids` go in front unless the response holds `think_end_id` (`</think>`).

The result equals the template's text re-tokenized, token for token, when the sampled ids are
the tokenizer's own encoding of their text (sampling may pick a non-canonical split, e.g. "a"+"b"
where "ab" is one token: same text, other ids) and the response avoids what a token splice
cannot redo: a start of whitespace then a newline (" \\n..." merges with the block's "\\n\\n"),
several `</think>`, or a `</think>` block not in the canonical "<think>\\nR\\n</think>\\n\\nC"
layout. Those cases are rare and only perturb the score; `retokenize.py` is the exact path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The probe conversation and response text used to read the template's layout.
_PROBE_MESSAGES = ({"role": "user", "content": "Hi"},)
_PROBE_RESPONSE = "X"
_THINK_START, _THINK_END = "<think>", "</think>"


@dataclasses.dataclass(frozen=True)
class RMTemplate:
  """Static ids for `build_rm_input`, read once from the RM's tokenizer by `rm_template_ids`.

  turn_end_ids: what the template writes after the assistant text (Qwen3: `<|im_end|>`, `\\n`).
  pad_id: written where the mask is 0.
  eos_ids: the policy's stop tokens; one ending a response is not part of the RM text.
  assistant_prefix_ids: what the template writes between the generation prompt and the
    assistant text (Qwen3: the empty think block `<think>\\n\\n</think>\\n\\n`).
  newline_ids: newline-only tokens the template strips off the response start (empty when it
    keeps them).
  think_end_id: a response holding this id is rendered with its own think block and gets no
    `assistant_prefix_ids` (None: the template does not treat it specially).
  """

  turn_end_ids: tuple[int, ...]
  pad_id: int
  eos_ids: tuple[int, ...]
  assistant_prefix_ids: tuple[int, ...] = ()
  newline_ids: tuple[int, ...] = ()
  think_end_id: int | None = None

  def input_length(self, prompt_len: int, response_len: int) -> int:
    """T of `build`'s [B, T] output."""
    return prompt_len + len(self.assistant_prefix_ids) + response_len + len(self.turn_end_ids)

  def build(self, prompt_ids_bp: jax.Array, prompt_mask_bp: jax.Array, response_ids_br: jax.Array,
            response_mask_br: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`build_rm_input` with this template's ids."""
    return build_rm_input(prompt_ids_bp, prompt_mask_bp, response_ids_br, response_mask_br,
                          self.turn_end_ids, self.pad_id, eos_ids=self.eos_ids,
                          assistant_prefix_ids=self.assistant_prefix_ids,
                          newline_ids=self.newline_ids, think_end_id=self.think_end_id)


def build_rm_input(prompt_ids_bp: jax.Array, prompt_mask_bp: jax.Array, response_ids_br: jax.Array,
                   response_mask_br: jax.Array, turn_end_ids: tuple[int, ...], pad_id: int, *,
                   eos_ids: tuple[int, ...], assistant_prefix_ids: tuple[int, ...] = (),
                   newline_ids: tuple[int, ...] = (),
                   think_end_id: int | None = None) -> tuple[jax.Array, jax.Array]:
  """RM input ids and mask [B, T], T = P + len(assistant_prefix_ids) + R + len(turn_end_ids).

  Layout per row: the left-padded prompt as given, then prefix, kept response tokens and
  turn-end tokens back to back, then right padding (pad_id, mask 0). `response_mask_br` is
  True through the first stop token inclusive (`sampling.generate`). All id tuples are static.
  Returns int32 ids and an int32 mask.
  """
  b, r = response_ids_br.shape
  k, e = len(assistant_prefix_ids), len(turn_end_ids)
  if e == 0:
    raise ValueError("turn_end_ids is empty: the RM score is read at the turn's closing token")
  ids_br = response_ids_br.astype(jnp.int32)
  valid_br = response_mask_br.astype(bool)
  len_b = valid_br.sum(axis=1, dtype=jnp.int32)
  last_b = jnp.take_along_axis(ids_br, jnp.maximum(len_b - 1, 0)[:, None], axis=1)[:, 0]
  ends_eos_b = (len_b > 0) & jnp.isin(last_b, jnp.asarray(eos_ids, jnp.int32))
  end_b = len_b - ends_eos_b.astype(jnp.int32)  # kept response tokens are [lead_b, end_b)
  r_idx = jnp.arange(r)
  kept_br = r_idx[None] < end_b[:, None]
  if newline_ids:
    nl_br = jnp.isin(ids_br, jnp.asarray(newline_ids, jnp.int32)) & kept_br
    lead_b = jnp.cumprod(nl_br, axis=1).sum(axis=1, dtype=jnp.int32)
  else:
    lead_b = jnp.zeros((b,), jnp.int32)
  n_b = end_b - lead_b
  if think_end_id is not None and k:
    own_think_b = jnp.any((ids_br == think_end_id) & kept_br, axis=1)
    k_b = jnp.where(own_think_b, 0, k)
  else:
    k_b = jnp.full((b,), k, jnp.int32)

  # The tail [B, K + R + E]: gather from three sources by each slot's offset.
  j_bt = jnp.broadcast_to(jnp.arange(k + r + e)[None], (b, k + r + e))
  resp_j_bt = j_bt - k_b[:, None]
  close_j_bt = resp_j_bt - n_b[:, None]
  from_resp_bt = jnp.take_along_axis(ids_br, jnp.clip(resp_j_bt + lead_b[:, None], 0, r - 1), axis=1)
  from_close_bt = jnp.asarray(turn_end_ids, jnp.int32)[jnp.clip(close_j_bt, 0, e - 1)]
  tail_bt = jnp.where(close_j_bt < e, from_close_bt, pad_id)
  tail_bt = jnp.where(resp_j_bt < n_b[:, None], from_resp_bt, tail_bt)
  if k:
    from_prefix_bt = jnp.asarray(assistant_prefix_ids, jnp.int32)[jnp.clip(j_bt, 0, k - 1)]
    tail_bt = jnp.where(j_bt < k_b[:, None], from_prefix_bt, tail_bt)
  tail_mask_bt = close_j_bt < e

  prompt_mask_bp = prompt_mask_bp.astype(bool)
  ids_bt = jnp.concatenate([jnp.where(prompt_mask_bp, prompt_ids_bp.astype(jnp.int32), pad_id), tail_bt], 1)
  mask_bt = jnp.concatenate([prompt_mask_bp, tail_mask_bt], axis=1).astype(jnp.int32)
  return ids_bt, mask_bt


def score_with_rm(rm_model: Any, ids_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """The RM's raw score [B] (float32): its score head's label 0 at each row's last real token."""
  if rm_model.cfg.head != "score":
    raise ValueError(f"expected a reward model with a score head, got head={rm_model.cfg.head!r}")
  return rm_model(ids_bt, mask_bt)[:, 0].astype(jnp.float32)


def rm_template_ids(rm_tokenizer: Any, policy_tokenizer: Any = None, *,
                    chat_template_kwargs: Mapping[str, Any] | None = None,
                    eos_ids: Sequence[int] | None = None) -> RMTemplate:
  """Reads the RM chat template's layout around the assistant text into static ids (host, once).

  `policy_tokenizer` (default: the RM's) and `chat_template_kwargs` must be those the policy
  prompts were rendered with (`data.encode_prompts`), since the in-graph input reuses the prompt
  ids: with `enable_thinking=False` the generation prompt already holds the empty think block
  and `assistant_prefix_ids` comes out empty. `eos_ids` defaults to the policy's stop tokens
  (`data.special_ids`). Raises when the tokenizers differ or the template does something a
  token splice cannot reproduce (e.g. trimming spaces): use `retokenize.py` then.
  """
  from grlo_jax.data import special_ids  # lazy: keeps this module's import light

  policy_tokenizer = rm_tokenizer if policy_tokenizer is None else policy_tokenizer
  if policy_tokenizer is not rm_tokenizer and policy_tokenizer.get_vocab() != rm_tokenizer.get_vocab():
    raise ValueError("the policy and RM tokenizers differ: use retokenize.retokenize_for_rm")
  eos_ids = special_ids(policy_tokenizer).eos_ids if eos_ids is None else tuple(int(i) for i in eos_ids)
  gen = policy_tokenizer.apply_chat_template(list(_PROBE_MESSAGES), add_generation_prompt=True,
                                             tokenize=False, **(chat_template_kwargs or {}))

  def render(content: str) -> str:
    msgs = [*_PROBE_MESSAGES, {"role": "assistant", "content": content}]
    return rm_tokenizer.apply_chat_template(msgs, tokenize=False)

  def encode(text: str) -> list[int]:
    return rm_tokenizer.encode(text, add_special_tokens=False)

  x = _PROBE_RESPONSE
  full = render(x)
  if not full.startswith(gen) or x not in full[len(gen):]:
    raise ValueError(f"the RM template's rendering {full!r} does not extend the policy prompt {gen!r}")
  prefix, suffix = full[len(gen):].split(x, 1)
  prefix_ids, turn_end_ids = tuple(encode(prefix)), tuple(encode(suffix))
  if encode(full) != encode(gen) + list(prefix_ids) + encode(x) + list(turn_end_ids):
    raise ValueError(f"{full!r} does not tokenize as prompt + {prefix!r} + response + {suffix!r}")
  for kept in (" " + x, x + "\n", x + " "):  # text a splice keeps verbatim must render verbatim
    if render(kept) != gen + prefix + kept + suffix:
      raise NotImplementedError(f"the RM template rewrites the response {kept!r}: use retokenize.py")

  newline_ids: tuple[int, ...] = ()
  nl_render = render("\n" + x)
  if nl_render == full:  # leading newlines stripped (Qwen3: content.lstrip("\n"))
    # Every newline-only vocabulary entry is BPE's encoding of a run of its own length.
    found = {i for n in range(1, 129) for i in encode("\n" * n)}
    newline_ids = tuple(sorted(i for i in found if set(rm_tokenizer.decode([i])) == {"\n"}))
  elif nl_render != gen + prefix + "\n" + x + suffix:
    raise NotImplementedError(f"the RM template rewrites a leading newline: {nl_render!r}")

  think_end_id = None
  vocab = rm_tokenizer.get_vocab()
  if prefix_ids and _THINK_END in vocab:
    own = f"{_THINK_START}\nR\n{_THINK_END}\n\n{x}"
    if render(own) == gen + own + suffix:  # a response's own think block replaces the empty one
      think_end_id = int(vocab[_THINK_END])
  return RMTemplate(turn_end_ids=turn_end_ids, pad_id=int(rm_tokenizer.pad_token_id), eos_ids=eos_ids,
                    assistant_prefix_ids=prefix_ids, newline_ids=newline_ids, think_end_id=think_end_id)


def compact_rows(ids_bt: np.ndarray, mask_bt: np.ndarray) -> list[list[int]]:
  """Each row's real ids (mask 1), in order: what a tokenizer would give unpadded (host, tests)."""
  return [np.asarray(ids)[np.asarray(m).astype(bool)].tolist() for ids, m in zip(ids_bt, mask_bt)]
