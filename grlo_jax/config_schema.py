"""Every config key's valid values, in one table: `validate(config)` checks a whole run at start-up.

  c = config_schema.validate(c, num_devices=jax.device_count(), check_paths=True)

`RULES` maps each dotted key of configs/grlo.py and configs/rlvr.py (every preset) to a rule; a key
without a rule is an error, and tests/train/test_config_validation.py walks every preset so that a
new key cannot skip the table. `CHECKS` holds the rules that span keys (batch splits, the mesh, a
reward model for the chosen route). Errors name the key, the value and the valid range or choices,
all bad keys at once, and come before any weights load. Values that verl users bring with the same
meaning are normalised (`rollout.top_k=-1` -> 0); those that mean something else here are refused
with the translation.

To add a key: give it a rule in `RULES` (in its section, `Optional(...)` when older configs may
lack it), and a cross-key check in `CHECKS` if its valid values depend on other keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
from etils import epath

from grlo_jax.data import arithmetic
from grlo_jax.models.config import ATTENTION_IMPLEMENTATIONS, PRESETS


class ConfigError(ValueError):
  """A config value is invalid; the message names each bad key, its value and what is valid."""


class _Bad(Exception):
  """Raised by a rule with what the value must be (the key and value are added by `validate`)."""


def _show(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


# --- Rules: each checks one value and returns it, normalised. ---

@dataclasses.dataclass(frozen=True)
class Rule:
  """One key's valid values. `verl` maps a spelling verl users bring to ours (accepted) and
  `refuse` maps a value to why it is refused (with the translation); `optional`: may be absent."""

  verl: Mapping[Any, Any] = dataclasses.field(default_factory=dict)
  refuse: Mapping[Any, str] = dataclasses.field(default_factory=dict)
  optional: bool = False

  def __call__(self, value: Any, check_paths: bool = False) -> Any:
    if _hashable(value) and not isinstance(value, bool):
      if value in self.refuse:
        raise _Bad(self.refuse[value])
      if value in self.verl:
        value = self.verl[value]
    return self.check(value, check_paths)

  def check(self, value: Any, check_paths: bool) -> Any:
    raise NotImplementedError


def _hashable(value: Any) -> bool:
  try:
    hash(value)
  except TypeError:
    return False
  return True


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
  if lo is not None and hi is not None:
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  if lo is not None:
    return f"{'>' if lo_open else '>='} {lo:g}"
  return f"{'<' if hi_open else '<='} {hi:g}"


def _in_range(x: float, lo, hi, lo_open, hi_open) -> bool:
  return ((lo is None or (x > lo if lo_open else x >= lo)) and (hi is None or (x < hi if hi_open else x <= hi)))


@dataclasses.dataclass(frozen=True)
class Int(Rule):
  lo: int | None = None
  hi: int | None = None
  note: str = ""  # what special values mean, e.g. "0 = off"

  def check(self, value, check_paths):
    if isinstance(value, bool) or not isinstance(value, int):
      raise _Bad(f"must be an integer {_range(self.lo, self.hi, False, False)}")
    if not _in_range(value, self.lo, self.hi, False, False):
      raise _Bad(f"must be an integer {_range(self.lo, self.hi, False, False)}"
                 + (f" ({self.note})" if self.note else ""))
    return value


@dataclasses.dataclass(frozen=True)
class Float(Rule):
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  note: str = ""

  def check(self, value, check_paths):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise _Bad(f"must be a finite number {_range(self.lo, self.hi, self.lo_open, self.hi_open)}")
    if not _in_range(value, self.lo, self.hi, self.lo_open, self.hi_open):
      raise _Bad(f"must be {_range(self.lo, self.hi, self.lo_open, self.hi_open)}"
                 + (f" ({self.note})" if self.note else ""))
    return float(value)


@dataclasses.dataclass(frozen=True)
class Bool(Rule):
  def check(self, value, check_paths):
    if not isinstance(value, bool):
      raise _Bad("must be True or False")
    return value


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
  choices: tuple[Any, ...] = ()
  suffix: str = ""  # an optional suffix every choice may carry (kl estimators' "+")

  def check(self, value, check_paths):
    base = value[:-len(self.suffix)] if self.suffix and isinstance(value, str) and value.endswith(
        self.suffix) else value
    if not _hashable(base) or base not in self.choices:
      more = f", optionally with {self.suffix!r}" if self.suffix else ""
      raise _Bad(f"must be one of {', '.join(_show(x) for x in self.choices)}{more}")
    return value


DTYPES = ("float32", "bfloat16", "float16")


def Dtype(empty: str = "", **kw) -> Choice:  # noqa: N802 (a rule constructor, like the classes)
  """A floating dtype by name; `empty` says what "" means (then "" is allowed)."""
  return Choice(choices=DTYPES + (("",) if empty else ()), **kw)


def Preset(empty: bool = False, **kw) -> Choice:  # noqa: N802
  """A model size preset of grlo_jax/models/config.py (`PRESETS`)."""
  return Choice(choices=tuple(sorted(PRESETS)) + (("",) if empty else ()), **kw)


@dataclasses.dataclass(frozen=True)
class MeshAxis(Rule):
  def check(self, value, check_paths):
    if isinstance(value, bool) or not isinstance(value, int) or not (value >= 1 or value == -1):
      raise _Bad("must be an integer >= 1, or -1 for the remaining devices")
    return value


@dataclasses.dataclass(frozen=True)
class Betas(Rule):
  """Adam's (b1, b2), each in [0, 1)."""

  def check(self, value, check_paths):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)):
      raise _Bad("must be a pair (b1, b2), each in [0, 1)")
    return tuple(float(b) for b in value)


@dataclasses.dataclass(frozen=True)
class Buckets(Rule):
  """Prompt widths, each an integer >= 1 (the batch is padded to the smallest that holds it)."""

  def check(self, value, check_paths):
    if (not isinstance(value, (tuple, list))
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in value)):
      raise _Bad("must be a tuple of prompt widths, each an integer >= 1 (() = always max_prompt_length)")
    return tuple(sorted(value))


@dataclasses.dataclass(frozen=True)
class Kwargs(Rule):
  """An open mapping of keyword arguments (any keys; values JSON-like)."""

  def check(self, value, check_paths):
    if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
      raise _Bad("must be a mapping of keyword arguments")
    return value


_TINY_TOKENIZER = re.compile(r"tiny(?::(\d+))?")
_MODEL_MARKERS = ("config.json", "model_config.json", "checkpoints")  # HF, Orbax model, training workdir


@dataclasses.dataclass(frozen=True)
class Path(Rule):
  """A local or gs:// path. kind: "model" (an HF / Orbax model folder or training workdir, or a
  file a format-specific loader reads), "tokenizer" (a folder, or the spec "tiny[:VOCAB]"),
  "prompts" (comma-separated .jsonl / .parquet files or `arithmetic:` specs, or "tiny": the
  shipped prompts).
  `empty` says what "" means (then "" is allowed). Existence is checked with `check_paths`."""

  kind: str = "model"
  empty: str = ""

  def check(self, value, check_paths):
    if not isinstance(value, str):
      raise _Bad("must be a path (string)")
    if not value:
      if self.empty:
        return value
      raise _Bad("must be set")
    if self.kind == "tokenizer" and _TINY_TOKENIZER.fullmatch(value):
      return value
    if self.kind == "prompts":
      if value == "tiny":
        return value
      for part in value.split(","):
        if arithmetic.is_spec(part):
          try:
            arithmetic.parse_spec(part)
          except ValueError as e:
            raise _Bad(str(e)) from None
          continue
        if epath.Path(part).suffix not in (".jsonl", ".parquet"):
          raise _Bad(f"{part!r} is not a .jsonl or .parquet file (comma-separated files, "
                     "arithmetic:SPLIT[:N[:SEED[:DIGITS]]], or 'tiny')")
        if check_paths and not epath.Path(part).is_file():
          raise _Bad(f"{part} does not exist")
      return value
    if check_paths:
      path = epath.Path(value)
      if not path.exists():
        raise _Bad(f"{value} does not exist" + (f" ('' = {self.empty})" if self.empty else ""))
      if (self.kind == "model" and path.is_dir() and not any((path / m).exists() for m in _MODEL_MARKERS)
          and not any(path.glob("*.gguf"))):  # a folder holding a GGUF file (docs/smollm2.md)
        raise _Bad(f"{value} is neither an HF model folder (config.json), an Orbax model folder "
                   "(model_config.json), a folder with a .gguf file, nor a training workdir (checkpoints/)")
      if self.kind == "tokenizer" and not ((path / "tokenizer.json").exists()
                                           or (path / "tokenizer_config.json").exists()):
        raise _Bad(f"{value} holds no tokenizer (tokenizer.json)")
    return value


@dataclasses.dataclass(frozen=True)
class Optional(Rule):  # noqa: A001 (a rule, not typing.Optional)
  """`rule`, for a key that older configs (or other branches' presets) may lack."""

  rule: Rule = None  # type: ignore[assignment]
  optional: bool = True

  def __call__(self, value, check_paths=False):
    return self.rule(value, check_paths)


# Knob values of the step and the reward (grlo_jax.rl.losses, .advantages, .rewards.score).
_LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
_KL = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")
_KL_REFUSE = {"full": "'full' needs the whole vocabulary's log-probs, which the step does not keep; "
                      "use kl, abs, mse or low_var_kl", "full+": "see 'full'"}
_ADV_ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_plus_plus")
_ROUTES = ("style", "model", "rule")
_RULES_VERIFIERS = ("math", "exact")


def _optim(prefix: str) -> dict[str, Rule]:
  return {
      f"{prefix}.lr": Float(lo=0.0, note="a negative rate would ascend the loss"),
      f"{prefix}.weight_decay": Float(lo=0.0),
      f"{prefix}.grad_clip": Float(lo=0.0, note="global-norm clip; 0 = off"),
      f"{prefix}.warmup_steps": Int(lo=0, note="0 = constant rate",
                                    refuse={-1: "verl's -1 (warm-up by ratio) has no counterpart here; "
                                                "give the warm-up in steps, 0 = none"}),
      f"{prefix}.betas": Betas(),
  }


# Every key of every preset, by section as in configs/grlo.py.
RULES: dict[str, Rule] = {
    "seed": Int(lo=0),
    "total_steps": Int(lo=0, note="0 = data.num_epochs full passes",
                       refuse={-1: "verl's 'no cap' is 0 here (0 = data.num_epochs full passes)"}),
    "max_bad_steps": Int(lo=1),
    "preflight": Optional(rule=Bool()),
    # model
    "model.policy_path": Path(kind="model", empty="initialise model.policy_arch at random"),
    "model.policy_arch": Preset(),
    "model.critic_path": Path(kind="model", empty="model.policy_path with a new value head"),
    "model.rm_path": Path(kind="model", empty="model.rm_arch at random, or no reward model"),
    "model.rm_arch": Preset(empty=True),
    "model.tokenizer": Path(kind="tokenizer", empty="model.policy_path's tokenizer"),
    "model.rm_tokenizer": Path(kind="tokenizer", empty="model.rm_path's, else the policy's"),
    "model.param_dtype": Dtype(),
    "model.compute_dtype": Dtype(),
    "model.rm_dtype": Dtype(),
    "model.remat": Bool(),
    "model.attention": Optional(rule=Choice(choices=ATTENTION_IMPLEMENTATIONS)),
    # data
    "data.train_files": Path(kind="prompts"),
    "data.train_batch_size": Int(lo=1),
    "data.max_prompt_length": Int(lo=1),
    "data.prompt_length_buckets": Optional(rule=Buckets()),
    "data.num_epochs": Int(lo=1),
    "data.skip_bad_records": Bool(),
    "data.chat_template_kwargs": Kwargs(),
    # rollout
    "rollout.n": Int(lo=1),
    "rollout.response_length": Int(lo=1),
    "rollout.temperature": Float(lo=0.0, note="0 = greedy", refuse={
        -1: "-1 is not 'greedy' or 'off' (in verl it is no valid temperature either); "
            "use 0 for greedy decoding, 1.0 for plain sampling"}),
    "rollout.top_p": Float(lo=0.0, hi=1.0, lo_open=True, note="1.0 = off",
                           refuse={-1: "verl's 'off' is 1.0 here"}),
    "rollout.top_k": Int(lo=0, note="0 = off", verl={-1: 0}),
    "rollout.cache_dtype": Dtype(empty="model.compute_dtype"),
    "rollout.max_num_seqs": Optional(rule=Int(lo=0, note="0 = all rows at once")),
    "rollout.prefill_chunk": Optional(rule=Int(lo=1)),
    # algorithm
    "algorithm.adv_estimator": Choice(choices=_ADV_ESTIMATORS),
    "algorithm.gamma": Float(lo=0.0, hi=1.0),
    "algorithm.lam": Float(lo=0.0, hi=1.0),
    "algorithm.norm_adv_by_std_in_grpo": Bool(),
    "algorithm.use_kl_in_reward": Bool(),
    "algorithm.kl_penalty": Choice(choices=_KL, suffix="+", refuse=_KL_REFUSE),
    "algorithm.kl_coef": Float(lo=0.0),
    # actor
    **_optim("actor.optim"),
    "actor.ppo_mini_batch_size": Int(lo=1),
    "actor.micro_batch_size": Int(lo=1),
    "actor.ppo_epochs": Int(lo=1),
    "actor.recompute_old_log_prob": Bool(),
    "actor.clip_ratio_low": Float(lo=0.0, hi=1.0, hi_open=True, note="the ratio's lower bound is 1 - low"),
    "actor.clip_ratio_high": Float(lo=0.0),
    "actor.clip_ratio_c": Float(lo=1.0, lo_open=True, note="dual-clip bound"),
    "actor.loss_agg_mode": Choice(choices=_LOSS_AGG_MODES),
    "actor.entropy_coeff": Float(lo=0.0),
    "actor.use_kl_loss": Bool(),
    "actor.kl_loss_coef": Float(lo=0.0),
    "actor.kl_loss_type": Choice(choices=_KL, suffix="+", refuse=_KL_REFUSE),
    "actor.use_dynamic_bsz": Optional(rule=Bool()),
    "actor.ppo_max_token_len_per_device": Optional(rule=Int(lo=1)),
    "actor.log_prob_max_token_len_per_device": Optional(rule=Int(lo=1)),
    # critic
    **_optim("critic.optim"),
    "critic.cliprange_value": Float(lo=0.0),
    "critic.ppo_max_token_len_per_device": Optional(rule=Int(lo=1)),
    # reward
    "reward.retokenize": Bool(),
    "reward.rm_max_length": Int(lo=1),
    "reward.route": Choice(choices=_ROUTES),
    "reward.rule": Choice(choices=_RULES_VERIFIERS),
    "reward.format_penalty": Float(lo=0.0),
    "reward.overlong_buffer_len": Int(lo=0, note="0 = off"),
    "reward.overlong_penalty_factor": Float(lo=0.0),
    "reward.truncation_penalty": Float(lo=0.0),
    "reward.length_penalty_coef": Float(lo=0.0),
    # mesh
    "mesh.data": MeshAxis(),
    "mesh.fsdp": MeshAxis(),
    "mesh.tensor": MeshAxis(),
    "mesh.dcn_data": Int(lo=1),
    # checkpoint
    "checkpoint.every_steps": Int(lo=1, refuse={-1: "verl's 'never save' has no counterpart: resumes read "
                                                    "checkpoints; the last step is always saved, so give "
                                                    "a number above total_steps to save only then"}),
    "checkpoint.max_to_keep": Int(lo=1),
    "checkpoint.async_save": Bool(),
    # log
    "log.every_steps": Int(lo=1),
    "log.samples_every_steps": Int(lo=0, note="0 = off"),
    "log.num_samples": Int(lo=0),
    "log.tensorboard": Bool(),
    "log.peak_tflops": Float(lo=0.0, note="0 = no MFU"),
}


# --- Checks across keys: each returns messages naming the keys. ---

def _get(c: Mapping, key: str, default: Any = None) -> Any:
  for part in key.split("."):
    if not isinstance(c, (Mapping, ml_collections.ConfigDict)) or part not in c:
      return default
    c = c[part]
  return c


def _check_batch(c, num_devices, num_processes) -> list[str]:
  from grlo_jax.rl import build  # lazy: the step's modules are heavy and only needed here
  try:
    build.rl_config(c)  # the batch split and the estimator's needs, as the step checks them
  except ValueError as e:
    return [str(e)]
  b = c.data.train_batch_size
  if b % num_processes:
    return [f"data.train_batch_size={b} does not split over {num_processes} processes (each reads its own rows)"]
  return []


def _check_mesh(c, num_devices, num_processes) -> list[str]:
  if num_devices is None:
    return []
  m = c.mesh
  sizes = {a: m[a] for a in ("data", "fsdp", "tensor")}
  shown = " x ".join(f"mesh.{a}={v}" for a, v in sizes.items())
  if num_devices % m.dcn_data:
    return [f"mesh.dcn_data={m.dcn_data} slices do not divide the {num_devices} devices"]
  per_slice = num_devices // m.dcn_data
  if list(sizes.values()).count(-1) > 1:
    return [f"{shown}: at most one mesh axis may be -1"]
  known = math.prod(v for v in sizes.values() if v != -1)
  where = f"{per_slice} devices" + (" a slice" if m.dcn_data > 1 else "")
  if -1 in sizes.values():
    return [] if per_slice % known == 0 else [f"{shown} does not divide the {where}"]
  return [] if known == per_slice else [f"{shown} makes {known} devices, the run has {where} "
                                        "(the axes must multiply to the devices; -1 takes the rest)"]


def _check_models(c, num_devices, num_processes) -> list[str]:
  m, out = c.model, []
  if not m.tokenizer and not m.policy_path:
    out.append("model.tokenizer='' takes model.policy_path's tokenizer, but model.policy_path is empty: "
               "set model.tokenizer (e.g. 'tiny:512') or model.policy_path")
  if m.rm_path and not m.rm_arch:
    out.append(f"model.rm_path={m.rm_path!r} needs model.rm_arch (the reward model's size preset, for shapes)")
  has_rm = bool(m.rm_path or m.rm_arch)
  if c.reward.route == "model" and not has_rm:
    out.append("reward.route='model' sends every record to the reward model, but there is none "
               "(model.rm_path and model.rm_arch are empty); use reward.route='rule' or set one")
  if c.reward.retokenize and not has_rm:
    out.append("reward.retokenize=True re-tokenizes for a reward model, but there is none")
  if c.reward.retokenize and not (m.rm_tokenizer or m.rm_path):
    out.append("reward.retokenize=True needs the reward model's tokenizer: model.rm_tokenizer or model.rm_path")
  return out


def _check_shaping(c, num_devices, num_processes) -> list[str]:
  if c.reward.overlong_buffer_len > c.rollout.response_length:
    return [f"reward.overlong_buffer_len={c.reward.overlong_buffer_len} exceeds "
            f"rollout.response_length={c.rollout.response_length}"]
  return []


CHECKS: tuple[Callable[..., list[str]], ...] = (_check_batch, _check_mesh, _check_models, _check_shaping)


# --- Entry points. ---

def leaf_keys(c: Mapping | ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """The config's keys down to those with a rule (or to leaves where no rule exists)."""
  out = []
  for k, v in c.items():
    key = prefix + k
    if key not in RULES and isinstance(v, (Mapping, ml_collections.ConfigDict)):
      out += leaf_keys(v, key + ".")
    else:
      out.append(key)
  return out


def validate(c: ml_collections.ConfigDict, *, num_devices: int | None = None, num_processes: int = 1,
             check_paths: bool = False) -> ml_collections.ConfigDict:
  """A checked copy of `c` (locked like `c`), verl spellings normalised; raises `ConfigError`
  listing every bad key with its value and the valid range or choices.

  `num_devices`: check that the mesh fits that many devices. `check_paths`: check that model,
  tokenizer and prompt paths exist (local or gs://).
  """
  errors = []
  present = leaf_keys(c)
  for key in present:
    if key not in RULES:
      errors.append(f"{key}: no rule for this key in grlo_jax/config_schema.py (RULES); add one")
  for key, rule in RULES.items():
    if key not in present and not rule.optional:
      errors.append(f"{key}: missing (the configs in configs/ define it)")
  if errors:  # a malformed config: the value checks below would only add noise
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
  out = c.copy_and_resolve_references()
  for key in present:
    value = _get(out, key)
    try:
      new = RULES[key](value, check_paths)
    except _Bad as e:
      errors.append(f"{key}={_show(value)}: {e}")
      continue
    if new != value or type(new) is not type(value):
      parent, _, leaf = key.rpartition(".")
      with out.unlocked():
        (_get(out, parent) if parent else out)[leaf] = new
  if not errors:
    for check in CHECKS:
      errors += check(out, num_devices, num_processes)
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
  return out

