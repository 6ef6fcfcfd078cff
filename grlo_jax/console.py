"""The launch scripts' console: their own progress as plain timestamped lines, libraries quiet.

  console.setup(flags.FLAGS.verbosity)     # in an absl main(), after flags are parsed

At verbosity 0 (absl's `--verbosity` default) `grlo_jax` loggers print INFO lines as
"HH:MM:SS message" and the libraries (Orbax, absl, JAX, grain) only their warnings; at
`--verbosity=1` the libraries' INFO lines are back as well, at 2 and above their DEBUG lines.
"""

from __future__ import annotations

import logging
import sys

LIBRARIES = ("absl", "orbax", "jax", "grain", "etils", "matplotlib", "urllib3", "filelock")


def setup(verbosity: int = 0, *, lead: bool = True) -> None:
  """Routes `grlo_jax` logging to stderr (INFO; WARNING on a non-lead process) and sets the
  libraries' loggers from `verbosity`."""
  ours = logging.getLogger("grlo_jax")
  if not any(getattr(h, "_grlo_console", False) for h in ours.handlers):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler._grlo_console = True  # noqa: SLF001 (marks ours, so setup() is idempotent)
    ours.addHandler(handler)
  ours.propagate = False  # not also through absl's handler, with its long prefix
  ours.setLevel(logging.INFO if lead else logging.WARNING)
  library_level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
  for name in LIBRARIES:
    logging.getLogger(name).setLevel(library_level)


class _Formatter(logging.Formatter):
  def __init__(self):
    super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

  def format(self, record: logging.LogRecord) -> str:
    line = super().format(record)
    if record.levelno >= logging.WARNING:  # say what kind of line it is only when it matters
      head, _, rest = line.partition(" ")
      line = f"{head} {record.levelname.lower()}: {rest}"
    return line
