"""The memory planner against XLA's own accounting of the compiled step, and its CLI."""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from configs import grlo, rlvr
from grlo_jax import plan, sharding
from grlo_jax.rl import build

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(arch: str):
  """The tiny training config with the `arch` model preset for policy, critic and reward model."""
  c = grlo.get_config("tiny")
  c.model.policy_arch = c.model.rm_arch = arch
  return c


@pytest.mark.parametrize("arch, mesh_shape", [("tiny", {"fsdp": 4, "tensor": 2}), ("small", {"fsdp": 1})],
                         ids=["tiny-fsdp4xtensor2", "small-1dev"])
def test_estimate_is_within_25_percent_of_the_compiled_step(arch, mesh_shape):
  c = _config(arch)
  n = mesh_shape.get("fsdp", 1) * mesh_shape.get("tensor", 1)
  mesh = sharding.make_mesh(mesh_shape, devices=jax.devices()[:n])
  # LLVM's optimisation level changes the speed of the code XLA:CPU emits, not its buffer
  # assignment (the same figures either way); level 0 halves the compile time.
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
  ma = build.lower_step(c, mesh).compile(compiler_options=options).memory_analysis()
  # What the step holds at its peak: its arguments (the donated state, aliased with the outputs,
  # and the batch), the outputs that are not aliased (metrics), and XLA's temporary heap.
  compiled = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
              + ma.temp_size_in_bytes)
  p = plan.estimate(c, mesh, unroll_decode=jax.default_backend() == "cpu")
  # Weights, AdamW moments and the batch are counted, not estimated.
  assert p.arguments == pytest.approx(ma.argument_size_in_bytes, rel=0.01)
  assert p.total == pytest.approx(compiled, rel=0.25), (
      f"estimate {p.total / 2**20:.1f} MiB ({p.peak_phase}), compiled {compiled / 2**20:.1f} MiB "
      f"(temp {ma.temp_size_in_bytes / 2**20:.1f} MiB)\n{plan.format_table(p)}")


def test_figures_move_the_right_way():
  c = grlo.get_config()  # the paper's recipe; estimates only, nothing compiles
  mesh = {"fsdp": 16}
  small, large = plan.estimate(c, mesh, micro_batch_size=16), plan.estimate(c, mesh, micro_batch_size=64)
  assert small.act_backward < large.act_backward and small.logits < large.logits
  assert small.act_forward < large.act_forward and small.act_reward < large.act_reward
  assert small.kv_cache == large.kv_cache  # the sampler runs on the whole batch
  p = plan.estimate(c, mesh, micro_batch_size=16, remat=True)
  assert p.act_backward_remat < p.act_backward_no_remat and p.act_backward == p.act_backward_remat
  assert plan.estimate(c, mesh, micro_batch_size=16, remat=False).act_backward == p.act_backward_no_remat
  by_fsdp = [plan.estimate(c, {"fsdp": f}) for f in (1, 4, 16, 64)]
  for fewer, more in itertools.pairwise(by_fsdp):
    assert more.params["actor"] < fewer.params["actor"] and more.optimizer < fewer.optimizer
    assert more.kv_cache < fewer.kv_cache  # the batch splits over fsdp too
  assert by_fsdp[2].params["actor"] == pytest.approx(by_fsdp[0].params["actor"] / 16, rel=0.01)
  # tensor splits the KV heads (8 in Qwen3-4B) and the MLP; the weights shrink either way.
  tp = plan.estimate(c, {"fsdp": 4, "tensor": 4})
  assert tp.kv_cache < by_fsdp[1].kv_cache and tp.params["actor"] < by_fsdp[1].params["actor"]


def test_sharding_follows_the_rule_table():
  # 4 KV heads on tensor=8 stay whole; 8 query heads split; the model dimension splits over fsdp.
  mesh = {"data": 1, "fsdp": 2, "tensor": 8}
  assert plan.per_device((4, 256, 4, 32), ("layers", "embed", "kv_heads", "head_dim"), mesh) == 4 * 128 * 4 * 32
  assert plan.per_device((256, 8, 32), ("embed", "q_heads", "head_dim"), mesh) == 128 * 32
  # The batch splits over data x fsdp only when both together divide it.
  assert plan.per_device((16,), ("batch",), {"data": 2, "fsdp": 4, "tensor": 1}) == 2
  assert plan.per_device((4,), ("batch",), {"data": 2, "fsdp": 4, "tensor": 1}) == 4


def test_suggested_micro_batch_divides_the_mini_batch_and_fits():
  c = grlo.get_config()
  mesh = {"data": 4, "fsdp": 16}
  mini = c.actor.ppo_mini_batch_size * c.rollout.n
  assert plan.suggest_micro_batch(c, mesh, hbm_bytes=1e18) == mini  # everything fits
  assert plan.suggest_micro_batch(c, mesh, hbm_bytes=1e9) == 0  # nothing does
  # Between the estimates of two divisors: the smaller one is the answer. (Fewer prompts a step,
  # so that the micro-batched update, not the whole-batch reward pass, sets the peak.)
  c.data.train_batch_size = 256
  lo, hi = (plan.estimate(c, mesh, micro_batch_size=m) for m in (128, 256))
  assert lo.peak_phase == hi.peak_phase == "update" and lo.total < hi.total
  hbm = (lo.total + hi.total) / 2 / 0.9
  m = plan.suggest_micro_batch(c, mesh, hbm_bytes=hbm)
  assert m == 128 and mini % m == 0 and plan.estimate(c, mesh, micro_batch_size=m).fits(hbm)


def test_cli_prints_a_table_and_json_for_the_paper_recipe_on_a_v5p_32():
  out = subprocess.run(
      [sys.executable, "launch/plan.py", "--config=configs/grlo.py", "--mesh=fsdp=16", "--hbm_gib=95",
       "--config.actor.micro_batch_size=16", "--config.actor.use_dynamic_bsz=False"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  *table, last = out.stdout.strip().splitlines()
  got = json.loads(last)
  assert got["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1} and got["micro_batch_size"] == 16
  assert got["total"] == got["phases"][got["peak_phase"]] and isinstance(got["fits"], bool)
  assert got["params"]["actor"] == pytest.approx(4.02e9 * 4 / 16, rel=0.02)  # Qwen3-4B, float32, 16 ways
  assert "suggested_micro_batch_size" in got and any("KV cache" in line for line in table)


@pytest.mark.parametrize("attention, remat", [("chunked", False), ("chunked", True), ("xla", False)])
def test_fused_attention_footprint_is_within_25_percent_of_the_compiled_layers(attention, remat):
  """The planner's count of one model's forward + backward (what the update phase adds per model)
  against XLA's temp bytes for the decoder at T=2048, where dense scores would be most of it."""
  import jax.numpy as jnp
  from flax import nnx

  from grlo_jax import models

  cfg = models.preset("small", attention=attention, remat=remat)
  graphdef, state = models.loading.abstract(cfg)

  def loss(params, ids_bt):
    x_btd, _ = nnx.merge(graphdef, params).hidden(ids_bt)
    return jnp.mean(x_btd * x_btd)

  ids = jax.ShapeDtypeStruct((1, 2048), jnp.int32)
  compiled = jax.jit(jax.value_and_grad(loss)).lower(state, ids).compile().memory_analysis().temp_size_in_bytes
  got = plan.model_backward(cfg, rows=1, t=2048, backend="cpu")
  assert got == pytest.approx(compiled, rel=0.25), f"estimate {got / 2**20:.0f} MiB, compiled {compiled / 2**20:.0f} MiB"


def test_fused_attention_drops_the_score_matrices_from_the_recipe():
  c = grlo.get_config()
  c.rollout.max_num_seqs = 0  # the static rollout, whose prefill attends [B, P] x (P + R)
  fused = plan.estimate(c, {"fsdp": 16}, micro_batch_size=16, backend="tpu", remat=True)
  c.model.attention = "xla"
  ref = plan.estimate(c, {"fsdp": 16}, micro_batch_size=16, backend="tpu", remat=True)
  assert fused.act_reward < ref.act_reward / 4 and fused.act_prefill < ref.act_prefill / 2
  assert fused.kv_cache == ref.kv_cache and fused.params == ref.params


def test_packed_estimate_follows_the_token_budget():
  c = grlo.get_config()  # packs by default
  mesh = {"fsdp": 16}
  padded = plan.estimate(c, mesh)
  small, large = (plan.estimate_packed(c, mesh, token_budget=b) for b in (8192, 32768))
  assert small.phases["rollout"] == padded.phases["rollout"]  # the rollout does not pack
  for phase in ("forward", "reward", "update"):
    assert small.phases[phase] < large.phases[phase]
  assert plan.estimate_packed(c, mesh).phases["update"] < padded.phases["update"]


def _packed_config(case: str):
  """Packed steps on the `tiny` model whose peak is the packed update of actor and critic
  (GAE, RM) or the rollout engine's slot cache (GRPO, long responses over 64 slots)."""
  if case == "gae-update":
    c = _config("tiny")
    c.actor.use_dynamic_bsz, c.actor.ppo_max_token_len_per_device = True, 2048
    c.rollout.max_num_seqs, c.rollout.response_length = 8, 64
    return c
  c = rlvr.get_config("tiny")
  c.model.policy_arch, c.model.policy_path, c.model.remat = "tiny", "", False
  c.model.compute_dtype = c.model.rm_dtype = "float32"
  c.data.train_batch_size = c.actor.ppo_mini_batch_size = 32  # x rollout.n = 4: 128 rows
  c.rollout.response_length, c.rollout.max_num_seqs = 512, 64
  c.actor.use_dynamic_bsz, c.actor.ppo_max_token_len_per_device = True, 576
  return c


@pytest.mark.parametrize("case, peak", [("gae-update", "update"), ("engine-rollout", "rollout")])
def test_packed_estimate_is_within_25_percent_of_the_compiled_step(case, peak):
  """`estimate_packed` (the packed passes and the rollout engine) against XLA:CPU's compile."""
  c = _packed_config(case)
  mesh = sharding.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
  ma = build.lower_step(c, mesh).compile(compiler_options=options).memory_analysis()
  compiled = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
              + ma.temp_size_in_bytes)
  p = plan.estimate_packed(c, mesh, backend=jax.default_backend())
  assert p.peak_phase == peak, plan.format_table(p)
  assert p.total == pytest.approx(compiled, rel=0.25), (
      f"estimate {p.total / 2**20:.1f} MiB ({p.peak_phase}), compiled {compiled / 2**20:.1f} MiB "
      f"(temp {ma.temp_size_in_bytes / 2**20:.1f} MiB)\n{plan.format_table(p)}")
