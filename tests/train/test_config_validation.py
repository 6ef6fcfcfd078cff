"""Config validation at start-up (grlo_jax/config_schema.py), the run's record (WORKDIR/config.json),
resumes that say what changed (grlo_jax/run_record.py) and `launch/train.py --dry_run`."""

import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import sys

import ml_collections
import pytest

from configs import grlo, rlvr
from grlo_jax import checkpoint, config_schema, preflight, run_record, trainer
from tests.train.test_cli import ROOT, _env
from tests.train.test_trainer import nano

NUM_DEVICES = 8  # tests/conftest.py


def _presets(module) -> list[str]:
  """Every preset a config module knows, read from its own error message (so a new one is covered)."""
  with pytest.raises(ValueError) as e:
    module.get_config("__no_such_preset__")
  return [""] + re.search(r"known: (.*)", str(e.value)).group(1).split(", ")


ALL_PRESETS = [(m, p) for m in (grlo, rlvr) for p in _presets(m)]


@pytest.mark.parametrize("module, preset", ALL_PRESETS, ids=lambda x: getattr(x, "__name__", x) or "default")
def test_every_key_of_every_preset_has_a_rule_and_the_preset_is_valid(module, preset):
  c = module.get_config(preset)
  keys = config_schema.leaf_keys(c)
  assert [k for k in keys if k not in config_schema.RULES] == []
  assert [k for k, r in config_schema.RULES.items() if k not in keys and not r.optional] == []
  out = config_schema.validate(c, num_devices=NUM_DEVICES)
  assert out.to_dict() == c.to_dict()


def test_a_key_without_a_rule_is_refused():
  c = grlo.get_config("tiny")
  c.rollout.new_knob = 3
  with pytest.raises(config_schema.ConfigError, match=r"rollout\.new_knob: no rule .*config_schema\.py"):
    config_schema.validate(c)


def _bad(key, value, **more):
  c = nano(total_steps=1)
  c.update_from_flattened_dict({key: value, **more})
  return c


def _assert_names(message: str, key: str, value) -> None:
  assert re.search(re.escape(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"), message), message


# The issue's table, through trainer.train: each stops before anything is written.
@pytest.mark.parametrize("key, value, says", [
    ("rollout.temperature", -1.0, "use 0 for greedy"),
    ("rollout.top_p", 0.0, "(0, 1]"),
    ("actor.optim.lr", -1.0, ">= 0"),
    ("actor.clip_ratio_low", -0.5, "[0, 1)"),
    ("rollout.n", 0, ">= 1"),
    ("rollout.response_length", 0, ">= 1"),
])
def test_the_reported_bad_values_stop_before_training(tmp_path, key, value, says):
  with pytest.raises(config_schema.ConfigError) as e:
    trainer.train(_bad(key, value), tmp_path / "run")
  _assert_names(str(e.value), key, value)
  assert says in str(e.value)
  assert not (tmp_path / "run").exists()


def test_an_empty_prompts_file_names_the_file_and_the_batch(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  with pytest.raises(ValueError, match=re.escape(f"data.train_files='{empty}': 0 prompts kept of 0 read")
                     + ".*data.train_batch_size=8"):
    trainer.train(_bad("data.train_files", str(empty)), tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.json").exists()


# One bad value per key family, straight through validate.
@pytest.mark.parametrize("key, value, says", [
    ("data.train_batch_size", 0, "integer >= 1"),  # counts
    ("actor.ppo_epochs", 0, "integer >= 1"),
    ("rollout.top_p", 1.5, "(0, 1]"),  # probabilities
    ("critic.optim.lr", -1e-5, ">= 0"),  # rates
    ("actor.optim.weight_decay", -0.1, ">= 0"),
    ("actor.entropy_coeff", -0.01, ">= 0"),  # coefficients
    ("algorithm.kl_coef", -1.0, ">= 0"),
    ("reward.length_penalty_coef", -1.0, ">= 0"),
    ("critic.cliprange_value", -0.5, ">= 0"),
    ("actor.clip_ratio_c", 1.0, "> 1"),
    ("algorithm.gamma", 1.5, "[0, 1]"),
    ("algorithm.lam", -0.1, "[0, 1]"),
    ("actor.optim.betas", (0.9, 1.0), "each in [0, 1)"),
    ("model.param_dtype", "fp32", "'float32', 'bfloat16', 'float16'"),  # dtypes by name
    ("rollout.cache_dtype", "int8", "'float32'"),
    ("model.policy_arch", "qwen9", "'qwen3_4b_base'"),  # presets
    ("model.attention", "flash", "'chunked'"),  # choices
    ("actor.loss_agg_mode", "mean", "'token-mean'"),
    ("algorithm.adv_estimator", "remax", "'grpo'"),
    ("reward.route", "mixed", "'style'"),
    ("data.train_files", "prompts.txt", "not a .jsonl or .parquet file"),
    ("data.train_files", "arithmetic:dev", "split must be one of"),  # synthetic prompt specs
    ("mesh.fsdp", 0, "-1 for the remaining devices"),
    ("checkpoint.every_steps", -1, "save only then"),  # verl spellings refused with the translation
    ("algorithm.kl_penalty", "full", "use kl, abs, mse or low_var_kl"),
    ("total_steps", -1, "0 here"),
])
def test_each_key_family_names_key_value_and_range(key, value, says):
  with pytest.raises(config_schema.ConfigError) as e:
    config_schema.validate(_bad(key, value), num_devices=NUM_DEVICES)
  _assert_names(str(e.value), key, value)
  assert says in str(e.value)


@pytest.mark.parametrize("overrides, says", [
    ({"mesh.data": 3}, "mesh.data=3 x mesh.fsdp=-1 x mesh.tensor=1 does not divide the 8 devices"),
    ({"mesh.fsdp": 2}, "mesh.data=1 x mesh.fsdp=2 x mesh.tensor=1 makes 2 devices, the run has 8 devices"),
    ({"mesh.data": -1}, "at most one mesh axis may be -1"),
    ({"actor.ppo_mini_batch_size": 3}, "actor.ppo_mini_batch_size=3 does not divide data.train_batch_size=8"),
    ({"model.rm_path": "", "model.rm_arch": "", "reward.route": "model"}, "reward.route='model'"),
    ({"model.tokenizer": ""}, "model.tokenizer='' takes model.policy_path's tokenizer"),
    ({"reward.overlong_buffer_len": 9}, "reward.overlong_buffer_len=9 exceeds rollout.response_length=8"),
])
def test_checks_across_keys_name_every_key(overrides, says):
  c = nano()
  c.update_from_flattened_dict(overrides)
  with pytest.raises(config_schema.ConfigError, match=re.escape(says)):
    config_schema.validate(c, num_devices=NUM_DEVICES)


def test_paths_are_checked_and_every_bad_key_is_listed(tmp_path):
  c = _bad("model.policy_path", str(tmp_path / "nope"), **{"data.train_files": str(tmp_path / "p.jsonl"),
                                                           "rollout.n": 0})
  with pytest.raises(config_schema.ConfigError) as e:
    config_schema.validate(c, check_paths=True)
  msg = str(e.value)
  assert f"model.policy_path='{tmp_path / 'nope'}': {tmp_path / 'nope'} does not exist" in msg
  assert f"{tmp_path / 'p.jsonl'} does not exist" in msg and "rollout.n=0" in msg
  (tmp_path / "folder").mkdir()
  with pytest.raises(config_schema.ConfigError, match="neither an HF model folder"):
    config_schema.validate(_bad("model.policy_path", str(tmp_path / "folder")), check_paths=True)


def test_verl_spellings_with_our_meaning_are_normalised_and_optional_keys_may_be_absent():
  c = _bad("rollout.top_k", -1)
  assert config_schema.validate(c).rollout.top_k == 0 and c.rollout.top_k == -1  # a copy, not in place
  assert config_schema.validate(_bad("algorithm.kl_penalty", "low_var_kl+")).algorithm.kl_penalty == "low_var_kl+"
  c = ml_collections.ConfigDict(nano().to_dict())
  del c.model["attention"]  # a config from before the key, or another branch's preset
  config_schema.validate(c)
  for key, good, bad in [("rollout.max_num_seqs", 0, -1), ("rollout.prefill_chunk", 256, 0),
                         ("actor.use_dynamic_bsz", True, 1), ("actor.ppo_max_token_len_per_device", 4096, 0),
                         ("critic.ppo_max_token_len_per_device", 4096, 0),
                         ("actor.log_prob_max_token_len_per_device", 4096, 0)]:
    section, leaf = key.split(".")
    c = nano()
    c[section][leaf] = good
    config_schema.validate(c)
    c = nano()
    if leaf in c[section]:  # a typed key: ml_collections itself refuses another type
      del c[section][leaf]
    c[section][leaf] = bad
    with pytest.raises(config_schema.ConfigError, match=re.escape(f"{key}={bad}")):
      config_schema.validate(c)


# --- The record and resumes: one 2-step run, copied for each test that resumes it. ---

@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "w"
  c = nano(total_steps=2)
  trainer.train(c, workdir)
  return workdir, config_schema.validate(c)


def _copy(run, tmp_path) -> pathlib.Path:
  shutil.copytree(run[0], tmp_path / "w")
  return tmp_path / "w"


def _files(workdir: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(workdir.rglob("*")) if p.is_file()}


def test_config_json_records_the_resolved_config_and_round_trips(run, tmp_path):
  workdir, resolved = run
  rec = json.loads((workdir / "config.json").read_text())
  assert rec["grlo_jax"]["version"] and re.fullmatch(r"[0-9a-f]{40}|unknown", rec["grlo_jax"]["git_commit"])
  assert rec["jax"]["version"] and rec["resumed_from_step"] is None
  assert rec["config"] == run_record.config_dict(resolved)
  # The record alone gives the same config: same keys, values and types (tuples too), locked.
  again = run_record.load_config(workdir / "config.json")
  assert again.is_locked and again.to_dict() == resolved.to_dict()
  flat = lambda d: {k: (type(v), v) for k, v in ml_collections.ConfigDict(d).items(preserve_field_references=False)}
  assert flat(again.to_dict()) == flat(resolved.to_dict())
  assert again.actor.optim.betas == (0.9, 0.999)
  # ... and a dry run from it resolves to it, with the data read and the memory estimate.
  report = preflight.dry_run(again)
  body = report.split("resolved config:\n", 1)[1].split("\n\n", 1)[0]
  assert json.loads(body) == rec["config"]
  assert "64 prompts kept of 64" in report and "update <- peak" in report


@pytest.mark.parametrize("overrides, says", [
    ({"model.policy_arch": "tiny"}, "policy/blocks/wd_fd: stored (2, 128, 64) float32, this config needs (4, 768, 256) float32"),
    ({"model.tokenizer": "tiny:400"}, "tokenizer: the run's ('tiny:512', 512 ids"),
    ({"algorithm.adv_estimator": "grpo", "rollout.n": 2},  # no critic any more
     "state/critic/blocks/attn_norm_d/value: in the checkpoint ((2, 64) float32), this config has no such tensor"),
])
def test_a_resume_that_does_not_fit_stops_and_leaves_every_byte(run, tmp_path, overrides, says):
  workdir = _copy(run, tmp_path)
  before = _files(workdir)
  c = run_record.load_config(workdir / "config.json")
  c.update_from_flattened_dict(overrides)
  with pytest.raises(run_record.ResumeError) as e:
    trainer.train(c, workdir)
  msg = str(e.value)
  for key, value in overrides.items():
    assert f"{key}: {run[1][key.split('.')[0]][key.split('.')[1]]!r} -> {value!r}" in msg, msg
  assert says in msg and "nothing in the workdir was changed" in msg, msg
  assert _files(workdir) == before


def test_a_dtype_change_on_resume_is_logged_per_tensor(run, caplog):
  c = run_record.load_config(run[0] / "config.json")
  c.model.param_dtype = "bfloat16"
  with caplog.at_level("WARNING", logger="grlo_jax.run_record"):
    resume = run_record.check_resume(config_schema.validate(c), run[0])
  assert resume.step == 2 and resume.changes == (("model.param_dtype", "float32", "bfloat16"),)
  assert "dtype change: policy/blocks/attn_norm_d: stored float32, restored as bfloat16" in caplog.text


def test_a_resume_with_harmless_changes_continues_and_logs_them(run, tmp_path, caplog):
  workdir = _copy(run, tmp_path)
  before = _files(workdir)
  c = run_record.load_config(workdir / "config.json")
  c.total_steps = 3
  c.log.every_steps = 5  # (a new learning rate would be harmless too, but recompile the step)
  with caplog.at_level("WARNING", logger="grlo_jax.run_record"):
    st = trainer.train(c, workdir)
  assert int(st.step) == 3 and checkpoint.Checkpointer(workdir).latest_step() == 3
  assert "resuming with 2 config change(s) since checkpoints/2" in caplog.text
  assert "total_steps: 2 -> 3" in caplog.text and "log.every_steps: 10 -> 5" in caplog.text
  after = _files(workdir)
  for name, digest in before.items():  # nothing deleted or rewritten; the logs only grew
    if name.endswith(".jsonl"):
      assert (workdir / name).read_bytes().startswith((run[0] / name).read_bytes()), name
    else:
      assert after[name] == digest, name
  rec = json.loads((workdir / "config.resume-1.json").read_text())
  assert rec["resumed_from_step"] == 2 and rec["changes_since"] == "checkpoints/2"
  assert [ch["key"] for ch in rec["changes"]] == ["total_steps", "log.every_steps"]
  assert run_record.records(workdir) == [workdir / "config.json", workdir / "config.resume-1.json"]


def test_launch_train_dry_run_reports_without_a_traceback(run, tmp_path):
  """The command line, from the run's record: --dry_run on its workdir with another model size
  exits non-zero naming the key, prints no traceback and leaves the workdir as it was."""
  workdir = _copy(run, tmp_path)
  before = _files(workdir)
  flags = [f"--config={workdir / 'config.json'}", f"--workdir={workdir}", "--config.model.policy_arch=tiny",
           "--dry_run"]
  out = subprocess.run([sys.executable, "launch/train.py", *flags], cwd=ROOT, capture_output=True, text=True,
                       env=dict(_env(), PYTHONPATH=str(ROOT)), timeout=300)
  assert out.returncode != 0 and "model.policy_arch: 'nano' -> 'tiny'" in out.stderr, out.stderr[-3000:]
  assert "Traceback" not in out.stderr + out.stdout
  assert _files(workdir) == before


def test_dry_run_refuses_a_bad_value_naming_it():
  with pytest.raises(config_schema.ConfigError, match=re.escape("rollout.n=0: must be an integer >= 1")):
    preflight.dry_run(_bad("rollout.n", 0))


def test_dry_run_reads_model_folders_without_weights(tmp_path):
  """An HF folder's config.json gives the shapes: the arch mismatch is noted, a vocabulary smaller
  than the tokenizer's is refused naming the path."""
  import transformers  # pylint: disable=g-import-not-at-top

  from tests.models import hf_fixtures  # pylint: disable=g-import-not-at-top
  hf_fixtures.save(transformers.Qwen3ForCausalLM, hf_fixtures.qwen3_config(vocab_size=640), tmp_path / "hf")
  report = preflight.dry_run(_bad("model.policy_path", str(tmp_path / "hf")))
  assert f"actor: {tmp_path / 'hf'} (vocab_size=640, hidden_size=64, intermediate_size=96" in report
  assert "note: model.policy_arch='nano' has other vocab_size, intermediate_size, head_dim" in report
  with pytest.raises(config_schema.ConfigError, match=re.escape(
      f"model.policy_path='{tmp_path / 'hf'}': vocab_size 640 < the tokenizer's 700 ids")):
    preflight.dry_run(_bad("model.policy_path", str(tmp_path / "hf"), **{"model.tokenizer": "tiny:700"}))
