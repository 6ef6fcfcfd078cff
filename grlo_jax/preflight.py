"""`launch/train.py --dry_run`: everything a run checks before its first weight loads, and its plan.

  print(preflight.dry_run(config, workdir=None))   # raises naming the key on a bad config

Checks the config (`config_schema.validate`, paths included), reads and encodes the prompts with
the run's tokenizer, reads the models' config files (no weights) against the tokenizer and the
`*_arch` presets, compares with the run in `workdir` when given (`run_record.check_resume`), and
returns the resolved config with the memory planner's estimate (`plan.estimate`) of its step.
"""

from __future__ import annotations

import json

import jax
import ml_collections
from etils import epath

from grlo_jax import checkpoint as ckpt_lib
from grlo_jax import config_schema, data, plan, run_record, trainer
from grlo_jax.rl import build

_DIMS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


def _model_notes(c: ml_collections.ConfigDict, vocab: int) -> list[str]:
  """Each model's source and shape; raises when the policy's vocabulary is smaller than the tokenizer's."""
  arch, m, notes = build.arch_configs(c), c.model, []
  for role, path, arch_key in (("actor", m.policy_path, "policy_arch"), ("critic", m.critic_path or m.policy_path,
                                                                          "policy_arch"), ("rm", m.rm_path, "rm_arch")):
    if arch[role] is None:
      continue
    cfg = run_record._model_config(path) if path else arch[role]  # pylint: disable=protected-access
    if cfg is None:
      notes.append(f"{role}: {path} (its loader reads the shapes)")
      continue
    dims = ", ".join(f"{d}={getattr(cfg, d)}" for d in _DIMS)
    notes.append(f"{role}: {path or f'random {getattr(m, arch_key)!r}'} ({dims})")
    differ = [d for d in _DIMS if getattr(cfg, d) != getattr(arch[role], d)]
    if path and differ:
      notes.append(f"  note: model.{arch_key}={getattr(m, arch_key)!r} has other "
                   f"{', '.join(differ)}; the memory estimate below uses model.{arch_key}")
    if role == "actor" and cfg.vocab_size < vocab:
      key = "model.policy_path" if path else "model.policy_arch"
      raise config_schema.ConfigError(f"{key}={path or m.policy_arch!r}: vocab_size {cfg.vocab_size} < the "
                                      f"tokenizer's {vocab} ids")
  return notes


def dry_run(c: ml_collections.ConfigDict, workdir: epath.PathLike | None = None) -> str:
  """The report `launch/train.py --dry_run` prints; raises (naming the key, file or tensor) on
  what would stop the run: a bad value, a missing path, bad prompts, a workdir it cannot resume."""
  c = config_schema.validate(c, num_devices=jax.device_count(), num_processes=jax.process_count(),
                             check_paths=True)
  resume = run_record.check_resume(c, workdir) if workdir is not None else run_record.Resume()
  saved = None if workdir is None else epath.Path(workdir) / ckpt_lib.TOKENIZER
  tokenizer = data.load_tokenizer(saved if saved is not None and (saved / "tokenizer_config.json").exists()
                                  else c.model.tokenizer or c.model.policy_path)
  prompts, num_bad = trainer.read_prompts(c, tokenizer)
  per_epoch = data.steps_per_epoch(prompts, c.data.train_batch_size)
  total = per_epoch * c.data.num_epochs if c.total_steps == 0 else min(per_epoch * c.data.num_epochs, c.total_steps)
  notes = _model_notes(c, len(tokenizer))
  mesh = trainer.make_mesh(c)
  estimate = plan.estimate(c, mesh)
  lines = ["config OK: every key valid, paths exist", "",
           "resolved config:", json.dumps(run_record.config_dict(c), indent=2), "",
           f"data: {len(prompts.prompts)} prompts kept of {prompts.num_read} read ({prompts.num_dropped} longer "
           f"than data.max_prompt_length, {num_bad} malformed skipped); {per_epoch} steps per epoch, "
           f"{total} steps in all", f"tokenizer: {len(tokenizer)} ids", *notes]
  if workdir is not None:
    lines.append(f"workdir: resumes from step {resume.step} with {len(resume.changes)} config change(s)"
                 if resume.step else f"workdir: {'restart, ' if resume.against else ''}starts at step 1")
  lines += ["", f"memory estimate a device (grlo_jax/plan.py) over mesh {dict(mesh.shape)}:",
            plan.format_table(estimate)]
  return "\n".join(lines)
