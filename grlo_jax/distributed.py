"""Multi-controller start-up: `jax.distributed.initialize` on pods and clusters, nothing on one host.

Cloud TPU pods are detected from the environment the TPU runtime sets and need no flags; GPU and
CPU clusters pass the coordinator explicitly (flags or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID). Must run before anything touches a device.
"""

from __future__ import annotations

import logging
import os

import jax
from absl import flags

log = logging.getLogger(__name__)


def define_flags() -> None:
  """--coordinator_address, --num_processes, --process_id for a launch script."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (GPU / CPU clusters).")
  flags.DEFINE_integer("num_processes", None, "Processes in the job (GPU / CPU clusters).")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")


def _on_multihost_tpu() -> bool:
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the job when there is one to join; a single-process run is left alone."""
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["JAX_PROCESS_ID"])
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
  elif _on_multihost_tpu():
    jax.distributed.initialize()  # the TPU runtime's environment names the coordinator
  else:
    return
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def initialize_from_flags() -> None:
  f = flags.FLAGS
  initialize(f.coordinator_address, f.num_processes, f.process_id)
