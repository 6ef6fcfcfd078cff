"""JSON Lines reading with errors that name the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from etils import epath


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError,
               on_error: Callable[[Exception], None] | None = None) -> Iterator[tuple[str, int, Any]]:
  """(`path:line`, line number, parsed value) for each non-blank line.

  A line that is not UTF-8 or not JSON raises `error` naming `path:line`; with `on_error`, the
  error goes to it instead and the line is skipped.
  """
  with epath.Path(path).open("rb") as f:
    for line_no, raw in enumerate(f, start=1):
      where = f"{path}:{line_no}"
      try:
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise error(f"{where}: invalid UTF-8 at byte {e.start}") from None
        if not line.strip():
          continue
        try:
          value = json.loads(line)
        except json.JSONDecodeError as e:
          raise error(f"{where}: invalid JSON: {e}") from None
      except error as e:
        if on_error is None:
          raise
        on_error(e)
        continue
      yield where, line_no, value
