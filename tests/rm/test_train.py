"""The RM trainer end to end on a tiny random model: a planted preference learned, the workdir
loads as `model.rm_path` with the scores the step computed, and 4 + 4 steps resume bitwise."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import rm as rm_configs
from grlo_jax import data, models
from grlo_jax.data import preferences
from grlo_jax.rewards import reward_model
from grlo_jax.rl import state as state_lib
from grlo_jax.rm import step as step_lib
from grlo_jax.rm import trainer


def _config(total_steps):
  c = rm_configs.get_config("tiny")
  c.total_steps = total_steps
  c.eval_every_steps = 4
  c.checkpoint.every_steps = 4
  c.checkpoint.async_save = False
  c.log.tensorboard = False
  return c


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(8 steps in one go, the same as 4 then 4 more in another workdir). The second workdir is
  given relative to the current directory, as users type it (Orbax itself takes only absolute
  paths)."""
  once, twice = tmp_path_factory.mktemp("once"), tmp_path_factory.mktemp("twice")
  st_once = trainer.train_rm(_config(8), once)
  cwd = os.getcwd()
  os.chdir(twice.parent)
  try:
    trainer.train_rm(_config(4), twice.name)
    st_twice = trainer.train_rm(_config(8), twice.name)
  finally:
    os.chdir(cwd)
  return (once, st_once), (twice, st_twice)


def test_planted_preference_separated(runs):
  (once, _), _ = runs
  rows = _rows(once)
  assert {"loss", "pair_accuracy", "margin", "score/chosen_mean", "score/rejected_mean"} <= set(rows[0])
  final = rows[-1]
  assert final["step"] == 8 and final["eval/pair_accuracy"] >= 0.95, final
  assert final["eval/loss"] < rows[3]["eval/loss"] < 0.69  # held-out loss falling, below chance


def test_resume_4_plus_4_is_bitwise(runs):
  (once, st_once), (twice, st_twice) = runs
  a, b = jax.device_get(nnx.to_pure_dict(st_once.actor)), jax.device_get(nnx.to_pure_dict(st_twice.actor))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  ra, rb = _rows(once), _rows(twice)
  for x, y in zip(ra[4:], rb[4:]):
    assert x["step"] == y["step"] and x["loss"] == y["loss"] and x["pair_accuracy"] == y["pair_accuracy"]
  assert (twice / "config.resume-1.json").exists()


def test_workdir_loads_as_rm_path_with_the_same_scores(runs):
  (once, st), _ = runs
  tok = data.load_tokenizer(once / "tokenizer")
  pairs = preferences.encode_pairs(preferences.read_pairs("planted:8:1"), tok, max_length=64)
  batch = preferences.eval_batches(pairs, 8)[0]
  rm = models.load_pretrained(once, head="score", num_labels=1)  # what trainer._load_models does for rm_path
  assert rm.cfg.head == "score"
  graphdef = nnx.graphdef(rm)
  want_c, want_r = step_lib.pair_scores(graphdef, st.actor, {k: jnp.asarray(v) for k, v in batch.items()})
  # The RL step's input for the same (prompt, reply): the policy prompt + response + turn end, in-graph.
  template = reward_model.rm_template_ids(tok)
  rec = pairs.pairs[0].record
  prompt = tok.apply_chat_template([dict(m) for m in rec.chosen[:-1]], add_generation_prompt=True, tokenize=False)
  prompt_ids = tok.encode(prompt, add_special_tokens=False)
  resp_ids = tok.encode(rec.chosen[-1]["content"], add_special_tokens=False) + [template.eos_ids[0]]
  ids_bt, mask_bt = template.build(jnp.asarray([prompt_ids]), jnp.ones((1, len(prompt_ids)), jnp.int32),
                                   jnp.asarray([resp_ids]), jnp.ones((1, len(resp_ids)), jnp.int32))
  assert reward_model.compact_rows(ids_bt, mask_bt)[0] == pairs.pairs[0].chosen_ids.tolist()
  got = reward_model.score_with_rm(rm, ids_bt, mask_bt)
  np.testing.assert_allclose(got[0], want_c[0], rtol=1e-5, atol=1e-5)
  got_b = reward_model.score_with_rm(rm, jnp.asarray(batch["rejected_ids_bt"]), jnp.asarray(batch["rejected_mask_bt"]))
  np.testing.assert_allclose(got_b, want_r, rtol=1e-5, atol=1e-5)


def test_resume_with_another_model_is_refused(runs, tmp_path):
  (once, _), _ = runs
  c = _config(12)
  c.model.base_arch = "tiny"
  with pytest.raises(ValueError, match="do not fit"):
    trainer.train_rm(c, once)


def test_critic_from_the_rm_starts_at_its_score(runs):
  (once, _), _ = runs
  rm = models.load_pretrained(once, head="score", num_labels=1)
  critic = models.load_pretrained(once, head="value", num_labels=1)  # model.critic_path=RM workdir
  ids_bt = jnp.asarray([[5, 9, 17, 40, 2]])
  np.testing.assert_allclose(critic(ids_bt)[:, -1], rm(ids_bt)[:, 0], rtol=1e-6, atol=1e-6)


def test_frozen_layers_train_only_the_top_blocks():
  """`frozen_layers=k`: the gradient of the blocks above k, the final norm and the score head is the
  full model's, the embedding's and bottom blocks' is zero, and a step (with weight decay) leaves
  those as they were, bit for bit."""
  cfg = models.preset("nano").replace(head="score", num_labels=1, num_layers=3, dtype="float32")
  graphdef, params = nnx.split(models.init_model(cfg, seed=0))
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(1, cfg.vocab_size, (4, 12)), jnp.int32)
  mask = jnp.asarray(np.arange(12)[None] < np.array([12, 9, 7, 12])[:, None])
  batch = {"chosen_ids_bt": ids[:2], "chosen_mask_bt": mask[:2], "rejected_ids_bt": ids[2:],
           "rejected_mask_bt": mask[2:], "weight_b": jnp.ones(2), "margin_b": jnp.zeros(2)}

  def loss(p, k):
    c_b, r_b = step_lib.pair_scores(graphdef, p, batch, k)
    return -jnp.mean(jax.nn.log_sigmoid(c_b - r_b))

  full, frozen = jax.grad(loss)(params, 0), jax.grad(loss)(params, 2)
  np.testing.assert_allclose(loss(params, 2), loss(params, 0), rtol=1e-6)  # the forward pass is the same
  for name, g in frozen["blocks"].items():
    np.testing.assert_allclose(g.value[2:], full["blocks"][name].value[2:], rtol=1e-5, atol=1e-7, err_msg=name)
    assert not np.any(g.value[:2]), name
    assert np.any(full["blocks"][name].value[:2]), name
  assert not np.any(frozen["embed_vd"].value)
  np.testing.assert_allclose(frozen["score_dc"].value, full["score_dc"].value, rtol=1e-5, atol=1e-7)

  tx = state_lib.make_optimizer(1e-2, weight_decay=0.1)
  st = state_lib.init_state(params, tx)
  new, _ = step_lib.make_rm_step(graphdef, tx, frozen_layers=2)(st, batch)
  for name, v in params["blocks"].items():
    np.testing.assert_array_equal(new.actor["blocks"][name].value[:2], v.value[:2], err_msg=name)
    assert np.any(new.actor["blocks"][name].value[2:] != v.value[2:]), name
  np.testing.assert_array_equal(new.actor["embed_vd"].value, params["embed_vd"].value)
  with pytest.raises(ValueError, match="frozen_layers=4"):
    step_lib.pair_scores(graphdef, params, batch, 4)


def test_bad_config_keys_are_named_at_once():
  c = _config(4)
  c.model.frozen_layers = 3  # the tiny preset's model has 2 blocks
  c.optim.lr_scheduler_type = "linear"
  with pytest.raises(ValueError) as e:
    trainer.validate(c)
  assert "model.frozen_layers=3: must be in [0, 2]" in str(e.value)
  assert "optim.lr_scheduler_type='linear'" in str(e.value)
  c.model.frozen_layers, c.optim.lr_scheduler_type = 2, "constant"
  trainer.validate(c)
