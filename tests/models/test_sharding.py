"""The forward on an 8-device mesh (fsdp=4 x tensor=2) equals the 1-device one."""

import pytest
import jax
import jax.numpy as jnp
import numpy as np
import transformers
from jax.sharding import PartitionSpec as P

from grlo_jax import models, sharding
from grlo_jax.models import chunked_attention
from tests.models import hf_fixtures as fx


@pytest.mark.parametrize("attention", ["xla", "chunked"])
def test_sharded_forward_equals_single_device(tmp_path, attention, monkeypatch):
  monkeypatch.setattr(chunked_attention, "DEFAULT_BLOCK", 4)  # rows of 9 tokens: 3 key blocks
  assert jax.device_count() == 8
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(num_key_value_heads=2), tmp_path)
  ids, mask = fx.left_padded_batch(seed=0, lengths=(9, 4, 9, 2, 7, 9, 1, 5))
  single = models.load_pretrained(tmp_path, attention="xla")
  want = np.asarray(single(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))

  mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  model = models.load_pretrained(tmp_path, mesh=mesh, attention=attention)
  assert model.blocks.wq_dnh.value.sharding.spec == P(None, "fsdp", "tensor", None)
  assert model.blocks.wd_fd.value.sharding.spec == P(None, "tensor", "fsdp")
  assert model.embed_vd.value.sharding.spec == P("tensor", "fsdp")
  assert model.lm_head_dv.value.sharding.spec == P("fsdp", "tensor")
  shard_shape = model.blocks.wq_dnh.value.addressable_shards[0].data.shape
  assert shard_shape == (2, 64 // 4, 4 // 2, 24)  # really split, not replicated

  ids_s = jax.device_put(jnp.asarray(ids), sharding.batch_sharding(mesh, ids.shape))
  mask_s = jax.device_put(jnp.asarray(mask), sharding.batch_sharding(mesh, mask.shape))
  with jax.set_mesh(mesh):
    got = jax.jit(lambda m, i, k: m(i, attention_mask=k))(model, ids_s, mask_s)
  assert got.addressable_shards[0].data.shape[0] == 8 // 4  # batch stays split over fsdp
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_indivisible_dims_stay_replicated():
  mesh = sharding.make_mesh({"fsdp": 1, "tensor": 8})
  assert sharding.spec(("embed", "kv_heads", "head_dim"), (64, 4, 16), mesh) == P("fsdp", None, None)
  assert sharding.spec(("embed", "q_heads", "head_dim"), (64, 8, 16), mesh) == P("fsdp", "tensor", None)


def test_mesh_slices_must_divide_the_devices():
  with pytest.raises(ValueError, match="mesh.dcn_data=3 slices do not divide 8 devices"):
    sharding.make_mesh(dcn_data=3)
  with pytest.raises(ValueError, match="needs 8 devices, 4 are available a slice"):
    sharding.make_mesh({"fsdp": 8}, dcn_data=2)
