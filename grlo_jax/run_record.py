"""The run's own record of its config: `config.json` in the workdir, and what a resume changes.

  resume = run_record.check_resume(c, workdir)   # before anything is written; raises ResumeError
  run_record.write(workdir, c, resume)           # config.json, or config.resume-<k>.json
  c = run_record.load_config("WORKDIR/config.json")   # the same config again (--config=...json)

The first start of a run writes `config.json`: the resolved config (after command-line
overrides and `config_schema.validate`), the grlo_jax version and git commit, the JAX version
and the devices. Each later start writes `config.resume-<k>.json` (k = 1, 2, ...) the same way
with the step it resumed from: no record is ever overwritten or deleted.

A resume compares the new config with the one that saved the checkpoint it restores (that
step's `meta`): it stops, before anything is written, when the checkpoint's tensors do not fit
the new config's train state (another model size or head, an optimizer with another state) or
when the tokenizer saved with the run differs from the one the config names, naming every
changed key with both values and each tensor that does not fit. Other changes (total_steps,
logging, learning rates, the mesh: restores reshard) are logged and the run goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import logging
import pathlib
import re
import subprocess
from typing import Any

import jax
import ml_collections
from etils import epath

from grlo_jax import checkpoint as ckpt_lib
from grlo_jax import models
from grlo_jax.models import hf
from grlo_jax.models.loading import ORBAX_CONFIG

log = logging.getLogger(__name__)

RECORD = "config.json"
_RESUME_RECORD = re.compile(r"config\.resume-(\d+)\.json")
_MAX_TENSORS_SHOWN = 8


class ResumeError(ValueError):
  """The workdir's checkpoint (or tokenizer) cannot be used with this config; nothing was written."""


def versions() -> dict[str, Any]:
  """grlo_jax's version and git commit (of the imported source tree), JAX's version and devices."""
  src = pathlib.Path(__file__).resolve().parent
  try:
    version = importlib.metadata.version("grlo_jax")
  except importlib.metadata.PackageNotFoundError:
    version = "unknown"
  git = lambda *args: subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                                     timeout=10).stdout.strip()
  try:
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    commit, dirty = "", False
  return {"grlo_jax": {"version": version, "git_commit": commit or "unknown", "git_dirty": dirty},
          "jax": {"version": jax.__version__, "backend": jax.default_backend(),
                  "devices": jax.device_count(), "processes": jax.process_count()}}


def config_dict(c: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as JSON values (tuples become lists), as records and checkpoints store it."""
  return json.loads(c.to_json_best_effort())


def _tuples(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def load_config(path: epath.PathLike) -> ml_collections.ConfigDict:
  """The config of a record (`WORKDIR/config.json`, a `config.resume-<k>.json`) or of a bare JSON
  config, locked as `--config=configs/grlo.py` gives it: the same keys, values and types."""
  path = epath.Path(path)
  try:
    obj = json.loads(path.read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such config file") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e})") from None
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
  c = ml_collections.ConfigDict(_tuples(obj.get("config", obj)))  # JSON lists were the config's tuples
  c.lock()
  return c


def records(workdir: epath.PathLike) -> list[epath.Path]:
  """The workdir's config records, oldest first: config.json, config.resume-1.json, ..."""
  workdir = epath.Path(workdir)
  found = [workdir / RECORD] if (workdir / RECORD).exists() else []
  resumes = [(int(m.group(1)), p) for p in (workdir.iterdir() if workdir.is_dir() else ())
             if (m := _RESUME_RECORD.fullmatch(p.name))]
  return found + [p for _, p in sorted(resumes)]


@dataclasses.dataclass(frozen=True)
class Resume:
  """What a start finds in its workdir: the checkpoint step it restores (None: a fresh start) and
  the config changes since the config it is compared with (`against`)."""

  step: int | None = None
  against: str = ""
  changes: tuple[tuple[str, Any, Any], ...] = ()


_ABSENT = "(absent)"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v and k != "chat_template_kwargs":
      out |= _flat(v, f"{prefix}{k}.")
    else:
      out[prefix + k] = v
  return out


def changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
  """(key, old value, new value) for every key that differs; `(absent)` for a key one side lacks."""
  a, b = _flat(old), _flat(new)
  return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in list(b) + [k for k in a if k not in b]
          if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _show(v: Any) -> str:
  return v if v is _ABSENT else repr(v)


def _model_config(path: str) -> models.ModelConfig | None:
  """The decoder config a model path holds (its config file only, no weights); None for formats
  only their loader reads."""
  p = epath.Path(path)
  if (p / ORBAX_CONFIG).exists():
    return models.ModelConfig.from_dict(json.loads((p / ORBAX_CONFIG).read_text()))
  if (found := ckpt_lib.policy_folder(p)) is not None:  # a training workdir: its config.json is a record
    return found[0]
  if (p / "config.json").exists():
    return hf.config_from_hf(json.loads((p / "config.json").read_text()), source=str(p / "config.json"))
  return None


def saved_state_shapes(c: ml_collections.ConfigDict):
  """The shape-only train state a checkpoint of this config holds (policy, critic, optimizer
  moments; not the frozen reward model and reference), the models' shapes read from their
  paths' config files (the `*_arch` presets for empty paths). None when a path's format has no
  config file to read."""
  from grlo_jax.rl import build  # lazy: the step's modules
  arch = build.arch_configs(c)
  m = c.model
  dtypes = dict(param_dtype=m.param_dtype, dtype=m.compute_dtype, remat=m.remat, attention=arch["actor"].attention)
  states = {"rm": None, "ref": None}
  for role, path, head in (("actor", m.policy_path, {}), ("critic", m.critic_path or m.policy_path,
                                                           dict(head="value", num_labels=1))):
    cfg = arch[role]
    if cfg is not None and path:
      file_cfg = _model_config(path)
      if file_cfg is None:
        return None
      cfg = file_cfg.replace(**dtypes, **head)
    states[role] = None if cfg is None else models.loading.abstract(cfg)[1]
  return build.abstract_state(states, build.optimizers(c))


def _tokenizer_spec(cfg: dict) -> str:
  m = cfg["model"]  # an RL config's policy_path, a reward-model config's base_path (configs/rm.py)
  return m["tokenizer"] or m.get("policy_path") or m.get("base_path", "")


def _tokenizer_problem(new: dict, old: dict, workdir: epath.Path) -> str | None:
  """Why the tokenizer saved with the run is not the one `new` names (None when it is)."""
  saved = workdir / ckpt_lib.TOKENIZER
  if _tokenizer_spec(new) == _tokenizer_spec(old) or not (saved / "tokenizer_config.json").exists():
    return None
  from grlo_jax import data  # lazy: transformers
  want, have = data.load_tokenizer(_tokenizer_spec(new)).get_vocab(), data.load_tokenizer(saved).get_vocab()
  if want == have:
    return None
  return (f"tokenizer: the run's ({_tokenizer_spec(old)!r}, {len(have)} ids, saved in "
          f"{saved}) is not this config's ({_tokenizer_spec(new)!r}, {len(want)} ids)")


def check_resume(c: ml_collections.ConfigDict, workdir: epath.PathLike, *,
                 state_shapes=None) -> Resume:
  """Compares `c` with the run already in `workdir` (reading only configs, Orbax metadata and
  tokenizers); raises `ResumeError` when the saved state does not fit `c`, logs the other changes.
  `state_shapes(c)`: the shape-only train state of `c` (default `saved_state_shapes`, the RL
  state; `rm.trainer` passes the reward model's)."""
  workdir = epath.Path(workdir)
  new = config_dict(c)
  step_dir = ckpt_lib.find_step_dir(workdir) if (workdir / ckpt_lib.CHECKPOINTS).is_dir() else None
  if step_dir is not None:
    step, against = int(step_dir.name), f"{ckpt_lib.CHECKPOINTS}/{step_dir.name}"
    old = ckpt_lib.read_meta(step_dir).get("config")
  else:
    step, found = None, records(workdir)
    against = found[-1].name if found else ""
    old = json.loads(found[-1].read_text())["config"] if found else None
  if old is None:
    return Resume(step=step)
  diff = changes(old, new)
  problems = []
  misfit, cast = [], []
  if step_dir is not None:
    like = (state_shapes or saved_state_shapes)(c)
    if like is not None:
      misfit, cast = ckpt_lib.stored_mismatches(step_dir, like)
  if (tok := _tokenizer_problem(new, old, workdir)) is not None:
    problems.append(tok)
  if misfit:
    shown = misfit[:_MAX_TENSORS_SHOWN]
    more = len(misfit) - len(shown)
    problems.append("tensors of the checkpoint that do not fit this config:\n    " + "\n    ".join(shown)
                    + (f"\n    ... and {more} more" if more else ""))
  listed = "\n    ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diff) or "(none)"
  if problems:
    raise ResumeError(
        f"cannot resume {workdir} from {against} with this config; nothing in the workdir was changed.\n"
        f"  changed keys (the run's value -> this config's):\n    {listed}\n  " + "\n  ".join(problems)
        + f"\n  Resume with the run's values (--config={workdir / RECORD} holds its first config), "
          "or start a new --workdir.")
  if diff:
    log.warning("%s with %d config change(s) since %s:\n    %s", "resuming" if step else "restarting",
                len(diff), against, listed)
  for line in cast[:_MAX_TENSORS_SHOWN]:
    log.warning("dtype change: %s", line)
  return Resume(step=step, against=against, changes=tuple(diff))


def write(workdir: epath.PathLike, c: ml_collections.ConfigDict, resume: Resume = Resume()) -> epath.Path:
  """Writes this start's record: `config.json` on the first start, else the next
  `config.resume-<k>.json` (never overwriting one). Returns its path. A workdir whose
  checkpoints predate records gets `config.resume-1.json`: `config.json` is always the config
  that started the run."""
  workdir = epath.Path(workdir)
  found = records(workdir)
  if not found and resume.step is None:
    path = workdir / RECORD
  else:
    last = max([int(m.group(1)) for p in found if (m := _RESUME_RECORD.fullmatch(p.name))] or [0])
    path = workdir / f"config.resume-{last + 1}.json"
  body = {**versions(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "resumed_from_step": resume.step, "changes_since": resume.against or None,
          "changes": [{"key": k, "was": a, "now": b} for k, a, b in resume.changes],
          "config": config_dict(c)}
  path.write_text(json.dumps(body, indent=2) + "\n")
  log.info("config recorded in %s", path)
  return path
