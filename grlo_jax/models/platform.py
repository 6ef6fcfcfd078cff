"""Which platform attention is built for: the host's backend, or a target that a lowering names
(`target_platform`), so that `auto` and the Pallas kernels follow the target, not the host."""

from __future__ import annotations

import contextlib
import contextvars

import jax

_TARGET = contextvars.ContextVar("attention_target_platform", default=None)
# jax.export's platform names -> JAX backend names.
BACKENDS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


@contextlib.contextmanager
def target_platform(name: str):
  """Within this block `auto` resolves, and the Pallas kernels lower, for `name` (cpu, gpu / cuda /
  rocm, tpu) instead of the host's backend; on a CPU host the kernels then lower natively for that
  platform, not in interpret mode."""
  if name not in BACKENDS:
    raise ValueError(f"unknown platform {name!r}; known: {', '.join(BACKENDS)}")
  token = _TARGET.set(BACKENDS[name])
  try:
    yield
  finally:
    _TARGET.reset(token)


def platform() -> str:
  """The backend attention is built for: `target_platform`'s, else JAX's default."""
  return _TARGET.get() or jax.default_backend()
