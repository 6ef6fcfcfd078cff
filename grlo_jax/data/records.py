"""GRLO prompt records: parsing, validation, and reading from JSONL, Parquet and TFDS.

A record is verl's RL prompt format:
`{"data_source", "prompt": [{"role", "content"}], "ability",
  "reward_model": {"style": "model" | "rule", "ground_truth"}, "extra_info"}`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from etils import epath

from grlo_jax.data import arithmetic
from grlo_jax.data.jsonl import iter_jsonl

STYLES = ("model", "rule")
ROLES = ("system", "user", "assistant", "tool")


class RecordError(ValueError):
  """A prompt record is malformed; the message names the file, the line or row, and the key."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One validated prompt record.

  `index` is the record's position in everything read together (all files, in order, before any
  filtering): the global record index that batches carry as `index_b`.
  """

  index: int
  data_source: str
  messages: tuple[Mapping[str, str], ...]
  ability: str
  style: str
  ground_truth: str
  extra_info: Mapping[str, Any]


def parse_record(obj: Any, *, index: int, where: str) -> PromptRecord:
  """Validates one decoded record; `where` (e.g. "file.jsonl:12") prefixes any error."""

  def fail(key: str, problem: str) -> RecordError:
    return RecordError(f"{where}: key {key!r}: {problem}")

  def typed(mapping: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], path: str) -> Any:
    value = mapping.get(key)
    if value is None:
      raise fail(path, "missing" if key not in mapping else "missing (null)")
    # bool is an int subclass; `true` is never a valid count or answer here.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
      raise fail(path, f"expected {_kind_names(kinds)}, got {type(value).__name__}")
    return value

  if not isinstance(obj, Mapping):
    raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  data_source = typed(obj, "data_source", str, "data_source")
  prompt = typed(obj, "prompt", (list, tuple), "prompt")
  if not prompt:
    raise fail("prompt", "empty message list")
  messages = []
  for i, message in enumerate(prompt):
    if not isinstance(message, Mapping):
      raise fail(f"prompt[{i}]", f"expected an object, got {type(message).__name__}")
    role = typed(message, "role", str, f"prompt[{i}].role")
    if role not in ROLES:
      raise fail(f"prompt[{i}].role", f"{role!r} is not one of {ROLES}")
    content = typed(message, "content", str, f"prompt[{i}].content")
    messages.append({"role": role, "content": content})
  if not any(m["content"].strip() for m in messages if m["role"] != "system"):
    raise fail("prompt", "no message has any text (an empty prompt)")
  # Optional keys may be absent, or null where Parquet unified schemas across records.
  ability = typed(obj, "ability", str, "ability") if obj.get("ability") is not None else ""
  reward_model = typed(obj, "reward_model", Mapping, "reward_model")
  style = typed(reward_model, "style", str, "reward_model.style")
  if style not in STYLES:
    raise fail("reward_model.style", f"{style!r} is not one of {STYLES}")
  # A rule-scored record is useless without an answer; model-scored ones carry "" in GRLO's data.
  if style == "rule" or reward_model.get("ground_truth") is not None:
    ground_truth = typed(reward_model, "ground_truth", (str, int, float),
                         "reward_model.ground_truth")
  else:
    ground_truth = ""
  extra_info = {}
  if obj.get("extra_info") is not None:
    extra_info = typed(obj, "extra_info", Mapping, "extra_info")
  return PromptRecord(
      index=index, data_source=data_source, messages=tuple(messages), ability=ability, style=style,
      ground_truth=str(ground_truth), extra_info=dict(extra_info))


OnError = Callable[[RecordError], None]


def read_jsonl(path: str | os.PathLike, *, first_index: int = 0, on_error: OnError | None = None,
               ) -> list[PromptRecord]:
  """Reads a JSONL file of records (blank lines skipped); errors name `path:line`.

  With `on_error`, a bad line or record goes to it and is skipped instead of raising.
  """
  records = []
  for where, _, obj in iter_jsonl(path, RecordError, on_error):
    try:
      records.append(parse_record(obj, index=first_index + len(records), where=where))
    except RecordError as e:
      if on_error is None:
        raise
      on_error(e)
  return records


def read_parquet(path: str | os.PathLike, *, first_index: int = 0) -> list[PromptRecord]:
  """Reads a Parquet file of records (verl's layout) with pyarrow; errors name `path row N`."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from e
  with epath.Path(path).open("rb") as f:
    rows = pq.read_table(f).to_pylist()
  return [parse_record(row, index=first_index + i, where=f"{path} row {i}")
          for i, row in enumerate(rows)]


def read_records(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                 on_error: OnError | None = None) -> list[PromptRecord]:
  """Reads `.jsonl` / `.parquet` files in order; record indices run on across files.

  A path `arithmetic:SPLIT[:N[:SEED[:DIGITS]]]` generates the synthetic additions of
  `grlo_jax.data.arithmetic` instead of reading a file.

  `on_error` (JSONL): called with each bad line's error, which is then skipped.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [p for p in str(paths).split(",") if p] if isinstance(paths, str) else [paths]
  records: list[PromptRecord] = []
  for path in paths:
    if arithmetic.is_spec(path):
      records += [parse_record(r, index=len(records) + i, where=f"{path} #{i}")
                  for i, r in enumerate(arithmetic.records(**arithmetic.parse_spec(path)))]
      continue
    suffix = epath.Path(path).suffix
    if suffix == ".parquet":
      records += read_parquet(path, first_index=len(records))
    elif suffix == ".jsonl":
      records += read_jsonl(path, first_index=len(records), on_error=on_error)
    else:
      raise ValueError(f"{path}: unknown prompt file type {suffix!r} (want .jsonl or .parquet)")
  return records


def read_tfds(
    name: str, *, split: str, data_dir: str | None = None,
    to_record: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> list[PromptRecord]:
  """Reads a TFDS dataset through `tfds.data_source` (random access, no TensorFlow graph).

  `to_record` maps one TFDS example to a GRLO record dict; by default the example's fields are
  the record's own, bytes decoded as UTF-8, and a `prompt` stored as a TFDS Sequence of dicts
  (a dict of per-message arrays) turned back into a list of messages.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(name, split=split, data_dir=data_dir)
  convert = to_record or _tfds_example_to_record
  return [parse_record(convert(source[i]), index=i, where=f"tfds:{name}[{split}] example {i}")
          for i in range(len(source))]


def _tfds_example_to_record(example: Mapping[str, Any]) -> Mapping[str, Any]:
  record = _decode_bytes(example)
  prompt = record.get("prompt")
  if isinstance(prompt, Mapping):  # tfds.features.Sequence({...}) yields a dict of columns
    record["prompt"] = [dict(zip(prompt, row)) for row in zip(*prompt.values())]
  return record


def _decode_bytes(value: Any) -> Any:
  if getattr(value, "ndim", None) == 0:  # numpy scalar or 0-d array
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, Mapping):
    return {k: _decode_bytes(v) for k, v in value.items()}
  if isinstance(value, Iterable) and not isinstance(value, str):
    return [_decode_bytes(v) for v in value]
  return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
  return kinds if isinstance(kinds, tuple) else (kinds,)


def _kind_names(kinds: type | tuple[type, ...]) -> str:
  names = {str: "string", int: "integer", float: "number", list: "list", tuple: "list",
           Mapping: "object"}
  return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _as_tuple(kinds)))
