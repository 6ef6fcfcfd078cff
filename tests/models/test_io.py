"""HF <-> Orbax round trips, the convert CLI, and clear errors for bad folders."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

from grlo_jax import models
from tests.models import hf_fixtures as fx

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _tensors(folder):
  out = {}
  for f in sorted(pathlib.Path(folder).glob("*.safetensors")):
    out.update(load_file(f))
  return out


@pytest.mark.parametrize("cls,cfg", [
    (transformers.Qwen3ForCausalLM, fx.qwen3_config()),
    (transformers.Qwen3ForCausalLM, fx.qwen3_config(tie_word_embeddings=True)),
    (transformers.LlamaForSequenceClassification, fx.llama_config(num_labels=1)),
    (transformers.Qwen3ForTokenClassification, fx.qwen3_config(num_labels=1)),
])
def test_hf_to_orbax_to_hf_is_exact(tmp_path, cls, cfg):
  fx.save(cls, cfg, tmp_path / "hf")
  models.save_orbax(models.load_pretrained(tmp_path / "hf"), tmp_path / "orbax")
  models.export_hf(models.load_pretrained(tmp_path / "orbax"), tmp_path / "back")
  src, back = _tensors(tmp_path / "hf"), _tensors(tmp_path / "back")
  assert set(src) == set(back)
  for k in src:
    np.testing.assert_array_equal(back[k], src[k], err_msg=k)
  # transformers loads the export as the same class.
  reloaded = transformers.AutoConfig.from_pretrained(tmp_path / "back")
  assert reloaded.architectures == [cls.__name__]
  model = getattr(transformers, cls.__name__).from_pretrained(tmp_path / "back")
  assert model.config.num_hidden_layers == 2


def test_convert_cli_round_trip(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path / "hf")
  for cmd, src, dst in [("hf-to-orbax", "hf", "orbax"), ("orbax-to-hf", "orbax", "back")]:
    subprocess.run([sys.executable, str(ROOT / "launch" / "convert.py"), cmd, f"--src={tmp_path / src}",
                    f"--dst={tmp_path / dst}"], check=True, cwd=ROOT, capture_output=True)
  src, back = _tensors(tmp_path / "hf"), _tensors(tmp_path / "back")
  assert all(np.array_equal(src[k], back[k]) for k in src) and set(src) == set(back)


def test_bfloat16_load(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  model = models.load_pretrained(tmp_path, dtype="bfloat16")
  assert model.blocks.wq_dnh.value.dtype == np.dtype("bfloat16") and model.cfg.dtype == "bfloat16"


def test_unsupported_architecture_is_named(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg["architectures"] = ["MistralForCausalLM"]
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="MistralForCausalLM"):
    models.load_pretrained(tmp_path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.layers.0.mystery.weight"] = np.zeros(3, np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\].*"
                     r"unexpected \['model.layers.0.mystery.weight'\]"):
    models.load_pretrained(tmp_path)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((40, 64), np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=r"model.layers.1.self_attn.k_proj.weight: shape \(40, 64\) "
                     r"does not fit parameter shape \(64, 2, 24\)"):
    models.load_pretrained(tmp_path)


def test_sharded_safetensors_folder(tmp_path):
  fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path / "hf")
  model = models.load_pretrained(tmp_path / "hf")
  from grlo_jax.models import hf, loading
  hf.write_hf(model.cfg, loading.host_params(model), tmp_path / "multi", max_shard_bytes=50_000)
  assert (tmp_path / "multi" / "model.safetensors.index.json").exists()
  assert len(list((tmp_path / "multi").glob("*.safetensors"))) > 2
  again = models.load_pretrained(tmp_path / "multi")
  np.testing.assert_array_equal(np.asarray(again.blocks.wg_df.value), np.asarray(model.blocks.wg_df.value))


def test_critic_from_a_causal_lm_gets_a_new_value_head(tmp_path):
  hf_model = fx.save(transformers.Qwen3ForCausalLM, fx.qwen3_config(), tmp_path)
  critic = models.load_pretrained(tmp_path, head="value")
  lm = models.load_pretrained(tmp_path)
  assert critic.cfg.head == "value" and not hasattr(critic, "lm_head_dv")
  np.testing.assert_array_equal(np.asarray(critic.blocks.wq_dnh.value), np.asarray(lm.blocks.wq_dnh.value))
  ids, mask = fx.left_padded_batch()
  values = np.asarray(critic(ids, attention_mask=mask))
  assert values.shape == ids.shape and np.isfinite(values).all()
  del hf_model
