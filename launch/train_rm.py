r"""Train a reward model (Bradley-Terry on preference pairs): configs/rm.py.

  python launch/train_rm.py --config=configs/rm.py:tiny --workdir=/tmp/rm_tiny
  python launch/train_rm.py --config=configs/rm.py:smollm2 --workdir=DIR \
      --config.model.base_path=models/smollm2 --config.data.train_files=PAIRS.jsonl \
      --config.data.eval_files=HELD.jsonl

Running again with the same workdir resumes from its newest checkpoint (the config guard of
launch/train.py: a checkpoint that does not fit the config stops the run, naming what changed).
The workdir is what `launch/train.py --config.model.rm_path=DIR` takes (grlo_jax/rm/trainer.py).
"""

import logging
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from grlo_jax import allocator, console

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/rm.py:tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, TensorBoard logs.", required=True)
flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup(flags.FLAGS.verbosity)
  from grlo_jax import run_record  # pylint: disable=g-import-not-at-top
  from grlo_jax.rm import trainer  # pylint: disable=g-import-not-at-top
  try:
    trainer.train_rm(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, run_record.ResumeError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
