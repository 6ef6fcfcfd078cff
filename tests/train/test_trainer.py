"""The training program in-process: exact resume, sharding, bad input, non-finite losses, configs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import grlo, rlvr
from grlo_jax import checkpoint, config_schema, data, models, sharding, trainer
from grlo_jax.rl import build
from grlo_jax.rl import flops as rl_flops


def nano(cfg=None, **overrides):
  """The tiny preset (2-layer models, a 512-id tokenizer) at test size: 8 prompts x 8 tokens."""
  c = cfg or grlo.get_config("tiny")
  c.data.train_batch_size = 8
  c.actor.ppo_mini_batch_size = 4 if c.rollout.n == 1 else 2
  c.actor.micro_batch_size = 4
  c.rollout.response_length = 8
  c.log.samples_every_steps = 1
  c.log.num_samples = 64
  c.log.tensorboard = False
  c.checkpoint.every_steps = 2
  for key, value in overrides.items():
    c.update_from_flattened_dict({key: value})
  return c


def read_jsonl(path):
  return [json.loads(line) for line in open(path)]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_resume_is_exact(tmp_path):
  """2 steps, stop, resume for 2 more == 4 steps in one go: same parameters bit for bit, same data."""
  whole = trainer.train(nano(total_steps=4), tmp_path / "whole")
  trainer.train(nano(total_steps=2), tmp_path / "split")
  assert checkpoint.Checkpointer(tmp_path / "split").latest_step() == 2
  resumed = trainer.train(nano(total_steps=4), tmp_path / "split")
  assert int(resumed.step) == 4
  for name in ("actor", "critic", "actor_opt", "critic_opt"):
    for a, b in zip(_leaves(getattr(whole, name)), _leaves(getattr(resumed, name))):
      np.testing.assert_array_equal(a, b, err_msg=name)
  order = lambda d: [(r["step"], r["index"]) for r in read_jsonl(tmp_path / d / "samples.jsonl")]
  assert order("whole") == order("split")
  # The workdir loads as a model (its newest policy), with the run's tokenizer beside it.
  model = models.load_pretrained(tmp_path / "split")
  for a, b in zip(_leaves(resumed.actor), _leaves(nnx.state(model))):
    np.testing.assert_array_equal(a, b)
  assert len(data.load_tokenizer(checkpoint.tokenizer_folder(tmp_path / "split"))) <= 512
  steps = [r["step"] for r in read_jsonl(tmp_path / "split" / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4]
  rec = read_jsonl(tmp_path / "whole" / "metrics.jsonl")[-1]
  for key in ("reward/mean", "response_length/mean", "throughput/tokens_per_s", "actor/pg_loss",
              "critic/vf_loss", "perf/tflops_per_s"):
    assert np.isfinite(rec[key]), key
  assert "perf/mfu" not in rec  # no log.peak_tflops given
  # Each epoch (8 of the 64 shipped prompts a step, 8 steps) visits prompts without repeats.
  indices = [i for _, i in order("whole")]
  assert len(set(indices)) == len(indices) == 32


def test_continuous_batching_rollout_logs_its_slot_metrics(tmp_path):
  """rollout.max_num_seqs < the step's rows: the rollout engine runs in the step and its metrics
  reach metrics.jsonl; the logged samples still do."""
  trainer.train(nano(total_steps=1, **{"rollout.max_num_seqs": 4, "rollout.prefill_chunk": 16}), tmp_path)
  rec = read_jsonl(tmp_path / "metrics.jsonl")[-1]
  assert 0 < rec["rollout/slot_utilization"] <= 1 and rec["rollout/refills"] >= 2
  assert rec["rollout/decode_iterations"] >= 1 and np.isfinite(rec["reward/mean"])
  assert len(read_jsonl(tmp_path / "samples.jsonl")) == 8


def test_rlvr_tiny_trains_with_the_verifier_on_eight_devices(tmp_path):
  c = nano(rlvr.get_config("tiny"), total_steps=2)
  c.mesh.fsdp, c.mesh.tensor = 4, 2
  c.log.peak_tflops = 2.0
  c.actor.use_dynamic_bsz = True  # packed rows, each of the 4 data shards packing its own
  st = trainer.train(c, tmp_path)
  assert int(st.step) == 2 and st.critic is None and st.rm is None
  wq = st.actor["blocks"]["wq_dnh"].value  # [L, D, N, H]: D over fsdp, heads over tensor
  assert len(wq.sharding.device_set) == 8
  assert wq.sharding.spec == sharding.spec(("layers", "embed", "q_heads", "head_dim"), wq.shape,
                                           wq.sharding.mesh)
  assert wq.addressable_shards[0].data.size == wq.size // 8
  rows = read_jsonl(tmp_path / "samples.jsonl")
  assert len(rows) == 2 * 8 * 4  # every rollout: 8 prompts x 4 responses, 2 steps
  # 1 for a right answer, 0 for a wrong one, -format_penalty (0.1) without any answer.
  assert all(min(abs(r["reward"] - v) for v in (1.0, 0.9, 0.0, -0.1)) < 1e-6 for r in rows)
  metrics = read_jsonl(tmp_path / "metrics.jsonl")
  assert len(metrics) == 2
  for m in metrics:  # MFU over all 8 devices' peak, of the real tokens; computed: the packed rows
    rl, p = build.rl_config(c), c.data.max_prompt_length
    padded = rl_flops.step_flops(rl, models.preset("nano"), 8, p,
                                 decode_tokens=int(m["response_length/max"]))["total"]
    by_phase = rl_flops.packed_step_flops(rl, models.preset("nano"), 8, p, m["perf/packed_rows"],
                                          c.actor.ppo_max_token_len_per_device,
                                          head_positions=m["perf/packed_head_positions"],
                                          decode_tokens=int(m["response_length/max"]))
    by_phase["rollout"] = rl_flops.rollout_flops(models.preset("nano"), m)  # the engine's own counts
    computed = sum(v for k, v in by_phase.items() if k != "total")
    assert m["perf/computed_tflop_per_step"] == pytest.approx(computed / 1e12)
    # 2 responses a device a mini-batch: one 320-token row each computes more than the padded 72s.
    assert m["perf/tflop_per_step"] < padded / 1e12 < m["perf/computed_tflop_per_step"]
    assert m["perf/computed_flop_ratio"] == pytest.approx(m["perf/computed_tflop_per_step"] / m["perf/tflop_per_step"])
    assert m["perf/passes_flop_ratio"] > 1.0 and m["perf/rollout_flop_ratio"] > 1.0
    assert m["perf/tflops_per_s"] == pytest.approx(m["perf/tflop_per_step"] / m["time/step_s"], rel=1e-6)
    assert m["perf/mfu"] == pytest.approx(m["perf/tflops_per_s"] / (2.0 * 8))


def test_non_finite_losses_skip_updates_then_stop_with_the_last_good_checkpoint(tmp_path):
  c = nano(total_steps=8, max_bad_steps=2)

  def nan_after_two(state, batch_rep, prompt_ids_bp, prompt_mask_bp, roll):
    score = roll.mask.sum(-1).astype(jnp.float32)
    return jnp.where(state.step >= 2, jnp.nan, score)

  with pytest.raises(trainer.NonFiniteError, match="last good checkpoint is step 2"):
    trainer.train(c, tmp_path, reward_fn=nan_after_two)
  assert checkpoint.Checkpointer(tmp_path).latest_step() == 2
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["actor/skipped_updates"] for r in rows] == [0, 0, 2, 2]  # 2 mini-batches a step
  good = models.load_pretrained(tmp_path)
  assert all(np.isfinite(x).all() for x in _leaves(nnx.state(good)))


BAD_LINES = [
    ('{"prompt": [', "p.jsonl:2: invalid JSON"),
    (b'{"prompt": "\xff"}', "p.jsonl:2: invalid UTF-8"),
    ('{"data_source": "x", "ability": "a", "reward_model": {"style": "model"}}', "p.jsonl:2: key 'prompt'"),
    ('{"data_source": "x", "prompt": [{"role": "user", "content": " "}], "reward_model": {"style": "model"}}',
     "p.jsonl:2: key 'prompt': no message has any text"),
]


def _prompts_with(tmp_path, line):
  good = open(data.TINY_PROMPTS, "rb").read().splitlines()
  path = tmp_path / "p.jsonl"
  path.write_bytes(b"\n".join([good[0], line if isinstance(line, bytes) else line.encode()] + good[1:9]) + b"\n")
  return str(path)


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_bad_records_name_file_and_line(tmp_path, line, message):
  c = nano(total_steps=1, **{"data.train_files": _prompts_with(tmp_path, line)})
  with pytest.raises(data.RecordError, match=message.replace("[", r"\[")):
    trainer.train(c, tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()  # failed before anything was written


def test_skip_bad_records_skips_and_counts(tmp_path):
  files = []
  for i, (line, _) in enumerate(BAD_LINES):  # one bad line in each of four files
    (tmp_path / str(i)).mkdir()
    files.append(_prompts_with(tmp_path / str(i), line))
  c = nano(total_steps=1, **{"data.train_files": ",".join(files), "data.skip_bad_records": True})
  trainer.train(c, tmp_path / "skip")
  (rec,) = read_jsonl(tmp_path / "skip" / "metrics.jsonl")
  assert rec["data/skipped_records"] == len(BAD_LINES)


def test_missing_weights_name_the_path(tmp_path):
  c = nano(total_steps=1, **{"model.policy_path": str(tmp_path / "nope")})
  with pytest.raises(config_schema.ConfigError, match=f"model.policy_path='{tmp_path / 'nope'}'"):
    trainer.train(c, tmp_path / "run")


@pytest.mark.parametrize("key, value, message", [
    ("actor.ppo_mini_batch_size", 3, "actor.ppo_mini_batch_size=3 does not divide data.train_batch_size=8"),
    ("actor.micro_batch_size", 3, "actor.micro_batch_size=3 does not divide"),
    ("algorithm.adv_estimator", "nope", "algorithm.adv_estimator='nope'"),
])
def test_impossible_configs_name_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    build.rl_config(nano(**{key: value}))


@pytest.mark.parametrize("preset,packed", [("", False), ("llama_rm", True), ("", True)])
def test_paper_scale_step_lowers_without_weights(preset, packed):
  """The full-size step (Qwen3-4B policy and critic, 8B RM, 1024 x 3072) lowers on abstract inputs,
  padded and packed (rows of 16384 tokens)."""
  c = grlo.get_config(preset)
  c.actor.use_dynamic_bsz = packed
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  text = build.lower_step(c, mesh).as_text()
  assert "1024x3072" in text or "3072" in text
  cfgs = build.arch_configs(c)
  assert cfgs["actor"].hidden_size == 2560 and cfgs["critic"].head == "value"
  assert cfgs["rm"].hidden_size == 4096 and cfgs["rm"].family == ("llama" if preset else "qwen3")


def test_rlvr_default_lowers():
  c = rlvr.get_config()
  assert build.arch_configs(c)["rm"] is None and c.algorithm.adv_estimator == "grpo"
  build.lower_step(c, sharding.make_mesh())
