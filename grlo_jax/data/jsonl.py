"""JSON Lines reading with errors that name the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from etils import epath


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[str, int, Any]]:
  """(`path:line`, line number, parsed value) for each non-blank line; bad JSON raises `error`."""
  with epath.Path(path).open("r") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        yield where, line_no, json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON: {e}") from None
