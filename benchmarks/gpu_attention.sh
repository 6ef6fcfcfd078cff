#!/usr/bin/env bash
# The GPU check of the attention implementations (one H100 / H200, under 10 minutes):
# cudnn, pallas_gpu and chunked against xla in bfloat16 (packed rows, left padding, an
# all-padding row), then a Qwen3-0.6B-shaped forward + backward at T=4096 with each.
# Prepare on a CPU machine: bash ../shared/gpu/fetch_wheels.sh ; carry .whl and run this.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .whl/install.sh ]; then bash .whl/install.sh; export PYTHONPATH=/tmp/site:$PWD; fi
python3 -c "import jax; print(jax.devices())"
timeout 540 python3 -m benchmarks.attention --preset=qwen3_0p6b --dtype=bfloat16 --lengths=4096 \
  --impls=xla,cudnn,pallas_gpu,chunked --check --repeats=5 | tee "${OUT:-.}/gpu_attention.json"
