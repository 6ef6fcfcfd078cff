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


# Work goes to the two xdist workers test by test (`--dist loadgroup`, pytest.ini), slowest files
# first (`pytest --durations`), so that the long subprocess and compile tests start at once and
# the short ones fill in around them: both workers finish together.
SLOW_FIRST = ("train/test_multihost.py", "train/test_cli.py", "test_gpu_check.py", "rl/test_step.py",
              "test_plan.py", "models/test_gguf.py", "rl/test_packing.py", "train/test_trainer.py",
              "eval/test_records.py", "train/test_memory_check.py", "eval/test_evaluate_cli.py",
              "models/test_io.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """A file with module-scoped fixtures runs on one worker (its fixtures built once); the slowest
  files' tests come first."""
  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    defs = [] if info is None else [d for ds in info.name2fixturedefs.values() for d in ds]
    if any(d.scope in ("module", "package", "session") and d.baseid for d in defs):
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
  rank = {str(pathlib.Path(__file__).parent / name): i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda it: rank.get(str(it.path), len(rank)))
