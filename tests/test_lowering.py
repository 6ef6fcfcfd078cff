"""The step lowers for TPU and GPU on this CPU host (jax.export over an abstract mesh), with the
platform's attention kernel in it and nothing a TPU cannot run: grlo_jax/lowering.py."""

import pytest

from configs import grlo, rlvr
from grlo_jax import lowering
from grlo_jax.models import attention

MESH = {"fsdp": 4, "tensor": 2}
CONFIGS = {"grlo": grlo, "rlvr": rlvr}
# The kernels each platform's `auto` must bring, forward and backward (no fallback to dense).
KERNELS = {"tpu": ("splash_mha_fwd", "splash_mha_dq", "splash_mha_dkv"),
           "cuda": ("mha_forward", "mha_backward")}


def _tiny(name: str):
  return lowering.recipe_shaped(CONFIGS[name].get_config("tiny"))


@pytest.fixture(scope="module")
def lowered() -> dict[tuple[str, str], lowering.Lowering]:
  return {(name, platform): lowering.lower_for(_tiny(name), MESH, platform)
          for name in CONFIGS for platform in lowering.PLATFORMS}


def test_recipe_shape_turns_on_the_recipe_knobs():
  c = _tiny("grlo")
  assert c.actor.use_dynamic_bsz and c.model.remat and c.model.compute_dtype == "bfloat16"
  assert 0 < c.rollout.max_num_seqs < c.data.train_batch_size * c.rollout.n  # the engine refills slots


def test_auto_resolves_for_the_target_platform():
  with attention.target_platform("tpu"):
    assert attention.platform() == "tpu" and attention.resolve("auto", 4096, 4096) == "splash"
  with attention.target_platform("cuda"):
    assert attention.resolve("auto", 4096, 4096) == "pallas_gpu"
  assert attention.platform() == "cpu"
  with pytest.raises(ValueError, match="unknown platform"):
    with attention.target_platform("metal"):
      pass


@pytest.mark.parametrize("platform", lowering.PLATFORMS)
@pytest.mark.parametrize("name", CONFIGS)
def test_step_lowers_with_the_platforms_kernels(lowered, name, platform):
  r = lowered[name, platform]
  assert r.ok, f"{r.error} at {r.error_source}"
  assert not r.missing_kernel, r.custom_calls
  for kernel in KERNELS[platform]:
    assert any(k.startswith(kernel) for k in r.kernels), (kernel, r.kernels)
  assert r.module_bytes > r.serialized_bytes > 0


@pytest.mark.parametrize("platform", lowering.PLATFORMS)
@pytest.mark.parametrize("name", CONFIGS)
def test_module_audit(lowered, name, platform):
  """No float64, host callback or dynamic shape; bfloat16 products, float32 accumulation where asked."""
  a = lowered[name, platform].audit
  assert a["f64"] == 0 and a["host_callbacks"] == [] and a["dynamic_dims"] == 0, a
  dots = a["dots"]
  bf16 = sum(n for k, n in dots.items() if k.startswith("bf16,bf16"))
  assert bf16 >= 0.9 * sum(dots.values()), dots
  assert dots.get("bf16,bf16->f32", 0) > 0, dots  # scores / logits / values accumulate in float32


def test_rlvr_host_verifier_is_named_when_kept():
  """The verifier's host callback cannot lower for TPU from a CPU host: the report names it."""
  r = lowering.lower_for(_tiny("rlvr"), MESH, "tpu", host_rewards=True)
  assert not r.ok
  assert r.host_ops and "pure_callback" in r.host_ops[0] and "rewards/score.py" in r.error_source


def test_cudnn_needs_the_hardware_to_lower():
  """jax's cuDNN attention checks the installed cuDNN while tracing: without a GPU the report says so
  by name (the rest of the GPU step is covered by the pallas_gpu rows above)."""
  c = _tiny("grlo")
  c.model.attention = "cudnn"
  r = lowering.lower_for(c, MESH, "cuda")
  if r.ok:  # a host with cuDNN: then the kernel must be in the module
    assert not r.missing_kernel
  else:
    assert "cuDNN" in r.error and "models/kernels.py" in r.error_source


def test_readers_find_what_they_look_for():
  stablehlo = """
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<4x8xbf16>, tensor<8x2xbf16>) -> tensor<4x2xf32>
    %1 = stablehlo.custom_call @xla_ffi_python_cpu_callback(%0) : (tensor<4x2xf32>) -> tensor<4x2xf64>
    %2 = stablehlo.add %x, %x : tensor<?x2xf32>
  """
  a = lowering.audit(stablehlo)
  assert a == {"f64": 1, "host_callbacks": ["xla_ffi_python_cpu_callback"], "dynamic_dims": 1,
               "dots": {"bf16,bf16->f32": 1}}
  hlo = """
  %all-gather.1 = bf16[4,128]{1,0} all-gather(%p), channel_id=1, metadata={op_name="jit(step)/rollout/while/body"}
  %rs = f32[2,64]{1,0} reduce-scatter(%g), channel_id=2, metadata={op_name="jit(step)/actor_update/x"}
  %ars = (f32[8]{0}, f32[8]{0}) all-reduce-start(%a), channel_id=3
  %ar = (f32[3]{0}, bf16[2]{0}) all-reduce(%b, %c), channel_id=4
  """
  c = lowering.collectives(hlo, ("rollout", "actor_update"))
  assert c["all-gather"] == {"ops": 1, "bytes": 4 * 128 * 2, "by_phase": {"rollout": 1024}}
  assert c["reduce-scatter"]["by_phase"] == {"actor_update": 2 * 64 * 4}
  assert c["all-reduce"]["ops"] == 2 and c["all-reduce"]["bytes"] == 8 * 4 + 3 * 4 + 2 * 2
  assert c["all-to-all"]["ops"] == 0


def test_hbm_by_topology():
  assert lowering.hbm_bytes("v5p:2x2x4") == 95 * lowering.GiB
  assert lowering.hbm_bytes("v5e:4x4") == 16 * lowering.GiB
  with pytest.raises(ValueError, match="unknown TPU generation"):
    lowering.hbm_bytes("v9:2x2")


@pytest.mark.parametrize("impl", ["splash", "pallas_gpu"])
def test_kernels_per_device_shard_match_dense(impl):
  """Under a mesh each Pallas kernel runs on its device's rows and heads (kernels._per_device):
  still the dense reference's numbers (interpret mode on CPU), heads split over tensor=2."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from grlo_jax import sharding

  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((8, 128, 4, 16), (8, 128, 2, 16),
                                                                     (8, 128, 2, 16)))
  seg = jnp.asarray(np.repeat([[1, 2]], 8, 0).repeat(64, 1) * (np.arange(128) >= rng.integers(0, 60, (8, 1))))
  mesh = sharding.make_mesh(MESH)
  with jax.set_mesh(mesh):
    got = attention.attend_jit(q, k, v, seg, impl=impl)
  want = attention.attend_jit(q, k, v, seg, impl="xla")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=2e-5)
