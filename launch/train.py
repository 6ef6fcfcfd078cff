r"""Train with a config: the RLHF stage (configs/grlo.py) or the RLVR stage (configs/rlvr.py).

  python launch/train.py --config=configs/grlo.py:tiny --workdir=/tmp/grlo_tiny
  python launch/train.py --config=configs/grlo.py --workdir=gs://bucket/run \
      --config.model.policy_path=gs://bucket/Qwen3-4B-Base --config.actor.optim.lr=2e-6

Running again with the same workdir resumes from its newest checkpoint (raise
`--config.total_steps` to train further). On several hosts: Cloud TPU is detected and
`jax.distributed` initialised automatically; elsewhere pass --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
SIGTERM saves a checkpoint and exits 0. `--verbosity=1` shows the libraries' INFO logs too.
"""

import logging
import sys
from collections.abc import Sequence

import jax
from absl import app, flags
from ml_collections import config_flags

from grlo_jax import allocator, console, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/grlo.py:tiny.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, TensorBoard logs (local or gs://).")
distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup(flags.FLAGS.verbosity)  # before JAX starts: its backend probing is INFO chatter
  distributed.initialize_from_flags()
  from grlo_jax import trainer  # after jax.distributed: importing JAX modules is fine, using devices is not
  # Process 0 logs progress; the others only warnings and errors (metrics are process 0's too).
  # Orbax's per-save chatter and other library INFO lines only at --verbosity=1.
  console.setup(flags.FLAGS.verbosity, lead=jax.process_index() == 0)
  try:
    trainer.train(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, trainer.NonFiniteError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
