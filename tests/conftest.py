"""Test setup: 8 virtual CPU devices (before JAX initialises) and float32 matmuls."""

import os

# LLVM at its lowest effort: the tests' tiny programs are compile-bound (a tiny RL step compiles
# ~25% faster), and buffers, shardings and results do not depend on it (benchmarks/gpu_check.sh
# --cpu does the same). Subprocess tests inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session, inherited by the subprocess tests: the
# training runs compile the same programs several times (resume, generate from a checkpoint).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="grlo_jax_test_xla_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the checkout; tests that need it skip without it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not found")
  return SHARED_DATA
