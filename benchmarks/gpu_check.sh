#!/usr/bin/env bash
# One GPU check (one H100 or H200, at most 8 minutes: no section starts after 6, the run is
# stopped at 8; benchmarks/gpu_check.py says what each section measures): cuDNN and Pallas-GPU
# attention against xla (parity with segment ids, forward + backward time at T=4096); the packed
# update pass's MFU on real tokens, Qwen3-0.6B-shaped; decode tokens/s and its fraction of the HBM
# roofline with the rollout engine over 64 slots; the long-tail step packed vs padded. Prints one
# JSON line (also written to $OUT/gpu_check.json when $OUT is set). Nothing is downloaded: every
# model is random.
#
# The GPU machine's image has jax (CUDA), flax, optax, orbax; the project's other dependencies
# travel as wheels: on a CPU machine with the network, from the repo root,
#   bash ../shared/gpu/fetch_wheels.sh      # -> .whl/ and .whl/install.sh (ignored by git)
# then carry ".whl" with the working tree; this script runs .whl/install.sh when it is there.
#
#   bash benchmarks/gpu_check.sh            # on the GPU
#   bash benchmarks/gpu_check.sh --cpu      # the same path at tiny sizes on a CPU (tests run it)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .whl/install.sh ]; then bash .whl/install.sh >&2; export PYTHONPATH=/tmp/site:$PWD; fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
limit=480
if [ "${1:-}" = "--cpu" ]; then
  export JAX_PLATFORMS=cpu
  # Buffers and results do not depend on LLVM's effort; at level 0 the tiny steps compile in half the time.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
  limit=300
fi
out=$(timeout "$limit" python3 -m benchmarks.gpu_check "$@")
echo "$out"
if [ -n "${OUT:-}" ]; then echo "$out" > "$OUT/gpu_check.json"; fi
