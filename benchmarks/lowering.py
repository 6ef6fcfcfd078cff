r"""Seconds to lower the paper-scale RL step on abstract inputs (no weights): the time a user's
first pod run spends in Python before XLA sees the program.

  python -m benchmarks.lowering [--configs=grlo,grlo_packed,rlvr] [--sides=cached,uncached]

Each (config, side) lowers in a fresh process over an fsdp=4 x tensor=2 mesh of CPU devices (the
first lowering in a process pays for tracing what later ones find cached). `uncached` traces every
layer's decode-attention branches anew (36 layers x 26 lengths for the recipe), as before
`models.transformer._decode_upto` kept one function a length; `cached` is the code as it is.
Prints one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {"grlo": ("grlo", False), "grlo_packed": ("grlo", True), "rlvr": ("rlvr", False)}


def _one(name: str, uncached: bool) -> float:
  from configs import grlo, rlvr
  from grlo_jax import sharding
  from grlo_jax.models import transformer
  from grlo_jax.rl import build

  if uncached:
    transformer._decode_upto = lambda n: (lambda q, k, v, m: transformer.decode_attention(  # noqa: SLF001
        q, k[..., :n], v[:, :, :n], m[..., :n]))
  module, packed = CONFIGS[name]
  c = (grlo if module == "grlo" else rlvr).get_config()
  c.actor.use_dynamic_bsz = packed
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  t0 = time.perf_counter()
  build.lower_step(c, mesh)
  return time.perf_counter() - t0


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default="grlo,grlo_packed,rlvr")
  ap.add_argument("--sides", default="cached,uncached")
  ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child: "config:side"
  a = ap.parse_args()
  if a.one:
    name, side = a.one.split(":")
    print(json.dumps({"lower_s": round(_one(name, side == "uncached"), 2)}))
    return
  from benchmarks import common

  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
  out = {"bench": "lowering", "git": common.git_rev(), **common.machine(), "rows": []}
  for name in a.configs.split(","):
    row = {"config": name}
    for side in a.sides.split(","):
      res = subprocess.run([sys.executable, "-m", "benchmarks.lowering", f"--one={name}:{side}"], env=env,
                           capture_output=True, text=True, check=True)
      row[f"{side}_s"] = json.loads(res.stdout.strip().splitlines()[-1])["lower_s"]
      common.log(f"lowering: {name} {side}: {row[f'{side}_s']} s")
    if "cached_s" in row and "uncached_s" in row:
      row["speedup"] = round(row["uncached_s"] / row["cached_s"], 2)
    out["rows"].append(row)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
