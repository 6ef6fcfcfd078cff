"""Preference pairs for reward-model training: reading, validation, chat formatting, batches.

A record is the common preference layout, one JSON object a line:

  {"prompt": "...", "chosen": "...", "rejected": "..."}               strings, or
  {"prompt": "...", "chosen": [{"role", "content"}, ...], "rejected": [...]}

A string side is the assistant's reply to `prompt` (a string: one user turn; or a message list).
A message-list side is the whole conversation when it holds a user turn (UltraFeedback-binarized,
HH-RLHF in TRL's conversational form; `prompt` may then be absent), else the turns after
`prompt`; either way it must end with an assistant turn. An optional number `margin` (how much
better chosen is) feeds the margin term of the loss (`rm.loss`).

Each side is rendered with the tokenizer's chat template without a generation prompt, the text
the reward model scores at its last token (`rewards/reward_model.py`: the policy's prompt +
response + the turn's closing tokens). A bad record (a missing key, a wrong type, an empty side,
chosen == rejected, a side longer than `max_length` tokens) raises `RecordError` naming
`file:line: key`, or with `on_error` is handed to it and skipped: the records read so far and
after it are kept.

Batches come from a grain `MapDataset` (shuffled, reshuffled each epoch, one integer of state):
chosen and rejected ids right-padded [B, T] to the smallest length bucket that holds the global
batch's longest side, so each width compiles the step once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from grlo_jax.data.jsonl import iter_jsonl
from grlo_jax.data.pipeline import bucket_width, host_rows
from grlo_jax.data.records import ROLES, RecordError

log = logging.getLogger(__name__)

OnError = Callable[[RecordError], None]
PLANTED_PREFIX = "planted:"
# Batch fields that go to the device.
DEVICE_KEYS = ("chosen_ids_bt", "chosen_mask_bt", "rejected_ids_bt", "rejected_mask_bt", "margin_b", "weight_b")


@dataclasses.dataclass(frozen=True)
class PairRecord:
  """One validated pair: both conversations in full (prompt turns + the assistant reply)."""

  index: int
  where: str  # "file:line"
  chosen: tuple[Mapping[str, str], ...]
  rejected: tuple[Mapping[str, str], ...]
  margin: float = 0.0


@dataclasses.dataclass(frozen=True)
class EncodedPair:
  record: PairRecord
  chosen_ids: np.ndarray  # int32 [Tc]
  rejected_ids: np.ndarray  # int32 [Tr]


@dataclasses.dataclass(frozen=True)
class PairSet:
  """The encoded pairs kept, how many records were read and how many were skipped as bad."""

  pairs: tuple[EncodedPair, ...]
  num_read: int
  num_skipped: int
  max_length: int
  pad_id: int


def _messages(value: Any, key: str, fail) -> list[dict[str, str]]:
  if not isinstance(value, (list, tuple)):
    raise fail(key, f"expected a string or a message list, got {type(value).__name__}")
  out = []
  for i, m in enumerate(value):
    if not isinstance(m, Mapping):
      raise fail(f"{key}[{i}]", f"expected an object, got {type(m).__name__}")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
      raise fail(f"{key}[{i}].role", f"{role!r} is not one of {ROLES}")
    if not isinstance(content, str):
      raise fail(f"{key}[{i}].content", "missing" if content is None else f"expected str, got {type(content).__name__}")
    out.append({"role": role, "content": content})
  return out


def parse_pair(obj: Any, *, index: int, where: str) -> PairRecord:
  """Validates one decoded record; errors name `where` (e.g. "pairs.jsonl:12") and the key."""

  def fail(key: str, problem: str) -> RecordError:
    return RecordError(f"{where}: key {key!r}: {problem}")

  if not isinstance(obj, Mapping):
    raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  for key in ("chosen", "rejected"):
    if obj.get(key) is None:
      raise fail(key, "missing")
  prompt = obj.get("prompt")
  if prompt is None:
    prompt_msgs = None
  elif isinstance(prompt, str):
    prompt_msgs = [{"role": "user", "content": prompt}]
  else:
    prompt_msgs = _messages(prompt, "prompt", fail)
  if prompt_msgs is not None and not any(m["content"].strip() for m in prompt_msgs if m["role"] != "system"):
    raise fail("prompt", "empty")
  sides = {}
  for key in ("chosen", "rejected"):
    value = obj[key]
    if isinstance(value, str):
      if prompt_msgs is None:
        raise fail("prompt", "missing (a string side needs the prompt it answers)")
      conv = prompt_msgs + [{"role": "assistant", "content": value}]
    else:
      turns = _messages(value, key, fail)
      if any(m["role"] == "user" for m in turns):
        conv = turns
      elif prompt_msgs is None:
        raise fail("prompt", "missing (the side holds no user turn)")
      else:
        conv = prompt_msgs + turns
      if not turns or turns[-1]["role"] != "assistant":
        raise fail(key, "does not end with an assistant turn")
    if not conv[-1]["content"].strip():
      raise fail(key, "empty reply")
    sides[key] = tuple(conv)
  if sides["chosen"] == sides["rejected"]:
    raise fail("rejected", "same as chosen")
  margin = obj.get("margin", 0.0)
  if margin is None:
    margin = 0.0
  if isinstance(margin, bool) or not isinstance(margin, (int, float)):
    raise fail("margin", f"expected a number, got {type(margin).__name__}")
  return PairRecord(index=index, where=where, chosen=sides["chosen"], rejected=sides["rejected"],
                    margin=float(margin))


def planted_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
  """`n` synthetic pairs with one planted preference: the chosen reply ends in " yes", the
  rejected one in " no", the rest random words (tests, the `tiny` preset)."""
  rng = np.random.default_rng([seed, 7])
  words = ("the", "cat", "sat", "on", "a", "mat", "what", "is", "two", "plus", "three", "answer", "red", "blue")
  out = []
  for _ in range(n):
    text = lambda k: " ".join(rng.choice(words, size=k))
    body = text(int(rng.integers(2, 8)))
    out.append({"prompt": text(int(rng.integers(3, 9))) + "?", "chosen": f"{body} yes",
                "rejected": f"{text(int(rng.integers(2, 8)))} no"})
  return out


def _parse_planted(spec: str) -> tuple[int, int]:
  parts = spec[len(PLANTED_PREFIX):].split(":")
  try:
    n, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
  except (ValueError, IndexError):
    raise ValueError(f"{spec!r}: expected planted:N[:SEED]") from None
  return n, seed


def read_pairs(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
               on_error: OnError | None = None) -> list[PairRecord]:
  """Every pair of the comma-separated JSONL files (or `planted:N[:SEED]` specs), in order.
  `index` counts every record read, bad ones included."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [p for p in str(paths).split(",") if p]
  out, index = [], 0
  for path in paths:
    path = str(path)
    if path.startswith(PLANTED_PREFIX):
      n, seed = _parse_planted(path)
      rows = [(f"{path}:{i + 1}", obj) for i, obj in enumerate(planted_records(n, seed))]
    else:
      rows = ((where, obj) for where, _, obj in iter_jsonl(path, RecordError, on_error))
    for where, obj in rows:
      try:
        out.append(parse_pair(obj, index=index, where=where))
      except RecordError as e:
        if on_error is None:
          raise
        on_error(e)
      index += 1
  return out


def render(tokenizer, conversation: Sequence[Mapping[str, str]],
           chat_template_kwargs: Mapping[str, Any] | None = None) -> str:
  """The conversation as the reward model reads it: the chat template, no generation prompt."""
  return tokenizer.apply_chat_template([dict(m) for m in conversation], tokenize=False,
                                       **(chat_template_kwargs or {}))


def encode_pairs(records: Sequence[PairRecord], tokenizer, *, max_length: int, on_error: OnError | None = None,
                 chat_template_kwargs: Mapping[str, Any] | None = None, num_skipped: int = 0) -> PairSet:
  """Renders and tokenizes both sides; a side over `max_length` tokens is a bad record (raised,
  or handed to `on_error` and skipped). `num_skipped` carries the reader's count."""
  kept = []
  skipped = num_skipped
  for r in records:
    ids = {}
    try:
      for key in ("chosen", "rejected"):
        ids[key] = np.asarray(tokenizer(render(tokenizer, getattr(r, key), chat_template_kwargs),
                                        add_special_tokens=False)["input_ids"], np.int32)
        if len(ids[key]) > max_length:
          raise RecordError(f"{r.where}: key {key!r}: {len(ids[key])} tokens > data.max_length={max_length}")
    except RecordError as e:
      if on_error is None:
        raise
      on_error(e)
      skipped += 1
      continue
    kept.append(EncodedPair(record=r, chosen_ids=ids["chosen"], rejected_ids=ids["rejected"]))
  return PairSet(pairs=tuple(kept), num_read=len(records) + num_skipped, num_skipped=skipped,
                 max_length=max_length, pad_id=int(tokenizer.pad_token_id))


def load_pairs(files: str, tokenizer, *, max_length: int, skip_bad: bool,
               chat_template_kwargs: Mapping[str, Any] | None = None) -> PairSet:
  """`read_pairs` + `encode_pairs`; with `skip_bad` each bad record is logged (file:line:key) and
  counted, else the first one raises."""
  bad = []

  def skip(e: RecordError) -> None:
    log.warning("skipping: %s", e)
    bad.append(e)

  on_error = skip if skip_bad else None
  records = read_pairs(files, on_error=on_error)
  n_read_bad = len(bad)
  out = encode_pairs(records, tokenizer, max_length=max_length, on_error=on_error,
                     chat_template_kwargs=chat_template_kwargs, num_skipped=n_read_bad)
  if bad:
    log.warning("%s: skipped %d bad records of %d (data.skip_bad_records=True)", files, len(bad), out.num_read)
  return out


def collate(pairs: Sequence[EncodedPair], width: int, pad_id: int, rows: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded [rows, width] chosen / rejected ids and masks, margins [rows] and weights [rows]
  (1 for a real pair; rows past len(pairs) repeat pair 0 with weight 0)."""
  rows = len(pairs) if rows is None else rows
  out = {k: np.full((rows, width), pad_id, np.int32) for k in ("chosen_ids_bt", "rejected_ids_bt")}
  out |= {k: np.zeros((rows, width), np.int32) for k in ("chosen_mask_bt", "rejected_mask_bt")}
  out["margin_b"] = np.zeros((rows,), np.float32)
  out["weight_b"] = np.zeros((rows,), np.float32)
  out["index_b"] = np.zeros((rows,), np.int32)
  for i in range(rows):
    p = pairs[i] if i < len(pairs) else pairs[0]
    for side, ids in (("chosen", p.chosen_ids), ("rejected", p.rejected_ids)):
      out[f"{side}_ids_bt"][i, :len(ids)] = ids
      out[f"{side}_mask_bt"][i, :len(ids)] = 1
    out["margin_b"][i] = p.record.margin
    out["weight_b"][i] = float(i < len(pairs))
    out["index_b"][i] = p.record.index
  return out


def longest(pairs: Sequence[EncodedPair]) -> int:
  return max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)


def steps_per_epoch(pairs: PairSet, batch_size: int) -> int:
  return len(pairs.pairs) // batch_size


def make_pair_iterator(pairs: PairSet, *, batch_size: int, seed: int, num_epochs: int | None,
                       length_buckets: Sequence[int] = (), shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.DatasetIterator:
  """Checkpointable iterator over this host's rows of each global batch of `batch_size` pairs
  (shuffled with `seed`, reshuffled each epoch, the last partial batch dropped)."""
  host = host_rows(batch_size, shard_index, shard_count)
  if steps_per_epoch(pairs, batch_size) == 0:
    raise ValueError(f"{len(pairs.pairs)} pairs make no full batch of {batch_size}")

  def pad(global_b):
    width = bucket_width(longest(global_b), pairs.max_length, length_buckets)
    return collate(global_b[host], width, pairs.pad_id)

  shuffle_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
  ds = (grain.MapDataset.source(pairs.pairs).shuffle(seed=shuffle_seed)
        .batch(batch_size, drop_remainder=True, batch_fn=pad).repeat(num_epochs))
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def eval_batches(pairs: PairSet, batch_size: int, length_buckets: Sequence[int] = ()) -> list[dict[str, np.ndarray]]:
  """Every pair once, in order, in batches of `batch_size` rows (the last filled with weight-0
  copies), each padded to one width: the longest side's bucket (one compile)."""
  width = bucket_width(longest(pairs.pairs), pairs.max_length, length_buckets)
  ps = pairs.pairs
  return [collate(ps[i:i + batch_size], width, pairs.pad_id, rows=batch_size) for i in range(0, len(ps), batch_size)]
