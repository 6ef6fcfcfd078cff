r"""Train with a config: the RLHF stage (configs/grlo.py) or the RLVR stage (configs/rlvr.py).

  python launch/train.py --config=configs/grlo.py:tiny --workdir=/tmp/grlo_tiny
  python launch/train.py --config=configs/grlo.py --workdir=gs://bucket/run \
      --config.model.policy_path=gs://bucket/Qwen3-4B-Base --config.actor.optim.lr=2e-6

Running again with the same workdir resumes from its newest checkpoint (raise
`--config.total_steps` to train further). On several hosts: Cloud TPU is detected and
`jax.distributed` initialised automatically; elsewhere pass --coordinator_address,
--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
SIGTERM saves a checkpoint and exits 0. `--verbosity=1` shows the libraries' INFO logs too.

Every config value is checked before any weights load (grlo_jax/config_schema.py; an error names
the key, its value and what is valid). The run's config is recorded in WORKDIR/config.json, and
`--config=WORKDIR/config.json` starts from it again. `--dry_run` checks the config, the prompt
files and the model paths, prints the resolved config and the step's memory estimate, and exits.
Before the first step the compiled step's memory is checked against the device's free memory; a
step that cannot fit stops there naming the knob and a value that fits (`--config.preflight=False`
skips the check; grlo_jax/memory_check.py).
"""

import logging
import os
import sys
from collections.abc import Sequence

import jax
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_impl

from grlo_jax import allocator, console, distributed, run_record

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/grlo.py:tiny, or a "
                                          "run's record WORKDIR/config.json.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, TensorBoard logs (local or gs://).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the config, data files and model paths (and the "
                             "workdir's run, if given), print the resolved config and memory estimate, exit.")
distributed.define_flags()
flags.mark_flags_as_required(["config"])


class _ConfigFileOrRecord(config_flags_impl.ConfigFileFlagParser):
  """A .json path is a run's record (or a bare JSON config); anything else a config .py[:preset]."""

  def parse(self, path):
    if isinstance(path, str) and path.endswith(".json"):
      try:
        return run_record.load_config(path)  # locked; --config.key=value overrides apply as usual
      except OSError as e:  # absl reports a ValueError as a flag error, without a traceback
        raise ValueError(str(e)) from e
    if not os.path.isfile(path.split(":", 1)[0]):
      raise ValueError(f"{path.split(':', 1)[0]}: no such config file")
    try:
      return super().parse(path)
    except ValueError as e:  # ml_collections puts get_config's traceback in the message: keep its last line
      raise ValueError(str(e).strip().splitlines()[-1]) from None


flags.FLAGS["config"].parser = _ConfigFileOrRecord(name="config", lock_config=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value and not _DRY_RUN.value:
    raise app.UsageError("--workdir is required (unless --dry_run)")
  console.setup(flags.FLAGS.verbosity)  # before JAX starts: its backend probing is INFO chatter
  distributed.initialize_from_flags()
  from grlo_jax import trainer  # after jax.distributed: importing JAX modules is fine, using devices is not
  # Process 0 logs progress; the others only warnings and errors (metrics are process 0's too).
  # Orbax's per-save chatter and other library INFO lines only at --verbosity=1.
  console.setup(flags.FLAGS.verbosity, lead=jax.process_index() == 0)
  try:
    if _DRY_RUN.value:
      from grlo_jax import preflight  # pylint: disable=g-import-not-at-top
      print(preflight.dry_run(_CONFIG.value, _WORKDIR.value))
      return
    trainer.train(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, trainer.NonFiniteError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
