r"""The reward-model step with the bottom blocks frozen: seconds a step and XLA's memory, side by side.

  python -m benchmarks.rm_step [--preset=smollm2_135m] [--pairs=16] [--length=112] [--grad_accum=2] \
      [--frozen=0,15,20,24] [--repeats=3]

One jitted `rm.step` (AdamW, float32, the `configs/rm.py:smollm2` batch shape) on a model of the
preset's shapes drawn at random (the time does not depend on the weights), for each
`model.frozen_layers`. Prints one JSON line a setting.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from grlo_jax import allocator, models
from grlo_jax.rl import state as state_lib
from grlo_jax.rm import step as step_lib


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="smollm2_135m")
  ap.add_argument("--pairs", type=int, default=16)
  ap.add_argument("--length", type=int, default=112)
  ap.add_argument("--grad_accum", type=int, default=2)
  ap.add_argument("--frozen", default="0,15,20,24")
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args()
  allocator.reexec_with_tcmalloc()
  cfg = models.preset(a.preset).replace(head="score", num_labels=1, dtype="float32", remat=False)
  graphdef, params = nnx.split(models.init_model(cfg, seed=0))
  rng = np.random.default_rng(0)
  b, t = a.pairs, a.length
  lengths = rng.integers(t // 2, t + 1, (2, b))
  batch = {"weight_b": jnp.ones(b), "margin_b": jnp.zeros(b)}
  for i, side in enumerate(("chosen", "rejected")):
    batch[f"{side}_ids_bt"] = jnp.asarray(rng.integers(1, cfg.vocab_size, (b, t)), jnp.int32)
    batch[f"{side}_mask_bt"] = jnp.asarray(np.arange(t)[None] < lengths[i][:, None])
  tx = state_lib.make_optimizer(4e-5, weight_decay=0.0)
  for k in (int(x) for x in a.frozen.split(",")):
    step = jax.jit(step_lib.make_rm_step(graphdef, tx, grad_accum_steps=a.grad_accum, frozen_layers=k),
                   donate_argnums=0)
    st = state_lib.init_state(jax.tree.map(jnp.copy, params), tx)
    compiled = step.lower(st, batch).compile()
    mem = compiled.memory_analysis()
    holder = [st]

    def run():
      holder[0], m = compiled(holder[0], batch)
      jax.block_until_ready(m)

    run()
    median, times = common.timed(run, a.repeats)
    print(json.dumps({"bench": "rm_step", "preset": a.preset, "pairs": b, "length": t, "grad_accum": a.grad_accum,
                      "frozen_layers": k, "num_layers": cfg.num_layers, "step_s": median, "times": times,
                      "temp_gib": mem.temp_size_in_bytes / 2**30, **common.machine(), "git": common.git_rev()}),
          flush=True)


if __name__ == "__main__":
  main()
