"""benchmarks/gpu_check.sh --cpu: the GPU check's whole path at tiny sizes, one JSON with every section."""

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_and_prints_every_section():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as on one GPU
  env["PYTHONPATH"] = str(ROOT)
  res = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu", "--peak_tflops=1", "--hbm_gbps=10"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=400, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["bench"] == "gpu_check" and out["cpu"] and out["backend"] == "cpu"
  for section in ("attention", "long_tail", "update_mfu", "decode"):
    assert section in out and "error" not in out[section], (section, out.get(section))
  assert out["attention"]["checks"]["chunked_max_rel_err"] < 1e-3 and out["attention"]["rows"][0]["xla_step_s"] > 0
  lt = out["long_tail"]
  assert lt["packed"]["median_s"] > 0 and lt["padded"]["median_s"] > 0 and lt["speedup"] > 0
  mfu = out["update_mfu"]
  assert mfu["update_s"] > 0 and 0 < mfu["update_mfu"] < 1 and mfu["update_useful_gflop"] > 0
  dec = out["decode"]
  assert dec["tok_per_s"] > 0 and dec["weight_bytes"] > 0 and 0 < dec["fraction_of_hbm_roofline"]
