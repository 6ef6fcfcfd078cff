"""The outer loop: data -> jitted RL step -> metrics -> checkpoint, resumable and preemptible.

  state = trainer.train(config, workdir)          # what `launch/train.py` runs

Every process runs this same loop (multi-controller JAX): each reads its own rows of every
global batch, the step runs on the global mesh, process 0 writes metrics and samples, and all
processes take part in Orbax saves. A run resumes from the newest checkpoint in `workdir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from grlo_jax import checkpoint as ckpt_lib
from grlo_jax import config_schema, data, memory_check, metrics, models, run_record, sharding
from grlo_jax.rewards import retokenize
from grlo_jax.rewards.reward_model import rm_template_ids
from grlo_jax.rewards.score import make_reward_fn, make_rule_fn
from grlo_jax.rl import build
from grlo_jax.rl import flops as rl_flops
from grlo_jax.rl import state as state_lib
from grlo_jax.rl.step import GraphDefs, RewardFn, RLConfig, jit_train_step, make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
  """Too many steps in a row had non-finite losses; the last good checkpoint is kept."""


@dataclasses.dataclass
class _Models:
  actor: models.Transformer
  critic: models.Transformer | None
  rm: models.Transformer | None
  ref: models.Transformer | None

  def graphdefs(self) -> GraphDefs:
    gd = lambda m: None if m is None else nnx.graphdef(m)
    return GraphDefs(actor=gd(self.actor), critic=gd(self.critic), rm=gd(self.rm))


def make_mesh(c: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The config's mesh over every device of every process (`mesh.dcn_data` slices on data)."""
  return sharding.make_mesh({"data": c.mesh.data, "fsdp": c.mesh.fsdp, "tensor": c.mesh.tensor},
                            dcn_data=c.mesh.dcn_data)


def _load_models(c: ml_collections.ConfigDict, mesh, vocab_needed: int) -> _Models:
  arch = build.arch_configs(c)
  m = c.model

  def get(role: str, path: str, seed: int, **overrides) -> models.Transformer | None:
    cfg = arch[role]
    if cfg is None:
      return None
    if path:
      log.info("%s: loading %s", role, path)
      out = models.load_pretrained(path, dtype=cfg.param_dtype, mesh=mesh, compute_dtype=cfg.dtype,
                                   remat=cfg.remat, attention=cfg.attention, **overrides)
    else:
      log.warning("%s: no path set, initialising the %r preset at random", role, m.policy_arch
                  if role != "rm" else m.rm_arch)
      out = models.init_model(cfg.replace(**overrides), seed=seed, mesh=mesh)
    if out.cfg.head == "lm" and out.cfg.vocab_size < vocab_needed:
      raise ValueError(f"model.{role}: vocab_size {out.cfg.vocab_size} < the tokenizer's {vocab_needed} ids")
    return out

  return _Models(actor=get("actor", m.policy_path, seed=c.seed),
                 critic=get("critic", m.critic_path or m.policy_path, seed=c.seed + 1, head="value",
                            num_labels=1),
                 rm=get("rm", m.rm_path, seed=c.seed + 2, head="score", num_labels=1),
                 ref=get("ref", m.policy_path, seed=c.seed))


def read_prompts(c: ml_collections.ConfigDict, tokenizer) -> tuple[data.PromptSet, int]:
  """The config's prompts, encoded and filtered; and how many malformed records were skipped.
  Raises naming `data.train_files` when they make no full batch."""
  files = str(data.TINY_PROMPTS) if c.data.train_files == "tiny" else c.data.train_files
  bad = []

  def skip(e: data.RecordError) -> None:
    log.warning("skipping: %s", e)
    bad.append(e)

  records = data.read_records(files, on_error=skip if c.data.skip_bad_records else None)
  if bad:
    log.warning("skipped %d malformed records (data.skip_bad_records=True)", len(bad))
  prompts = data.encode_prompts(records, tokenizer, max_prompt_length=c.data.max_prompt_length,
                                chat_template_kwargs=c.data.chat_template_kwargs.to_dict())
  if data.steps_per_epoch(prompts, c.data.train_batch_size) == 0:
    raise ValueError(
        f"data.train_files={c.data.train_files!r}: {len(prompts.prompts)} prompts kept of {prompts.num_read} read "
        f"({prompts.num_dropped} longer than data.max_prompt_length={c.data.max_prompt_length}, {len(bad)} "
        f"malformed skipped) make no full batch of data.train_batch_size={c.data.train_batch_size}")
  return prompts, len(bad)


def _reward_fn(c: ml_collections.ConfigDict, defs: GraphDefs, prompts: data.PromptSet, tokenizer,
               ids: data.SpecialIds) -> RewardFn:
  by_index = {p.record.index: p for p in prompts.prompts}
  needs_rule = c.reward.route == "rule" or (c.reward.route == "style" and any(
      p.record.style == "rule" for p in prompts.prompts))
  decode = lambda t, m: retokenize.decode_responses(t, m, tokenizer, ids.eos_ids)
  rule_fn = None
  if needs_rule:
    from grlo_jax.rewards.verifiers import math as math_verifier  # lazy: math-verify is heavy
    verifiers = {"math": math_verifier.math_reward,
                 "exact": lambda text, truth: float(math_verifier.extract_answer(text) == truth.strip())}
    if c.reward.rule not in verifiers:
      raise ValueError(f"reward.rule={c.reward.rule!r}; known: {sorted(verifiers)}")
    rule_fn = make_rule_fn(decode, {i: p.record.ground_truth for i, p in by_index.items()},
                           verifiers[c.reward.rule], format_penalty=c.reward.format_penalty,
                           has_answer=lambda text: math_verifier.extract_answer(text) is not None)
  template, rm_input_fn = None, None
  if defs.rm is not None:
    rm_tok_path = c.model.rm_tokenizer or (c.model.rm_path if c.reward.retokenize else "")
    if c.reward.retokenize:
      rm_tok = data.load_tokenizer(rm_tok_path)
      rm_input_fn = lambda t, m, index_b: retokenize.retokenize_for_rm(
          [by_index[int(i)].record.messages for i in index_b], t, m, tokenizer, rm_tok,
          c.reward.rm_max_length, eos_ids=ids.eos_ids)
    else:
      rm_tok = data.load_tokenizer(rm_tok_path) if rm_tok_path else tokenizer
      template = rm_template_ids(rm_tok, tokenizer, eos_ids=ids.eos_ids,
                                 chat_template_kwargs=c.data.chat_template_kwargs.to_dict())
  return make_reward_fn(defs.rm, template, rule_fn=rule_fn, shaping=build.shaping_config(c),
                        rm_input_fn=rm_input_fn, rm_input_length=c.reward.rm_max_length,
                        route=c.reward.route)


def _step_flops_fn(c: ml_collections.ConfigDict, rl: RLConfig, mdl) -> Callable[[dict, int], tuple[dict, dict]]:
  """(a step's metrics, its prompt width) -> (FLOPs of its real tokens, FLOPs it computed) by
  phase (`rl.flops.measured_step_flops`). The in-graph RM input is counted as prompt + response:
  the chat template's few closing tokens are left out."""
  r = rl.sampling.max_new_tokens
  kw = dict(critic=None if mdl.critic is None else mdl.critic.cfg, rm=None if mdl.rm is None else mdl.rm.cfg)

  def flops(m: dict, p: int) -> tuple[dict, dict]:
    rm_len = c.reward.rm_max_length if c.reward.retokenize else p + r
    return rl_flops.measured_step_flops(rl, mdl.actor.cfg, m, c.data.train_batch_size, p, rm_len=rm_len, **kw)

  return flops


def _perf(useful: dict, computed: dict, seconds: float, peak_tflops: float) -> dict[str, float]:
  """Step TFLOP/s of the real tokens (verl's convention) over all devices and, given each device's
  dense peak, the model FLOPs utilisation; what padding still costs as computed / real FLOPs, for
  the whole step, the rollout and the scoring + update passes."""
  flop, comp = useful["total"], computed["total"]
  out = {"perf/tflop_per_step": flop / 1e12, "perf/tflops_per_s": flop / seconds / 1e12,
         "perf/computed_tflop_per_step": comp / 1e12} | rl_flops.flop_ratios(useful, computed)
  if peak_tflops > 0:
    out["perf/mfu"] = out["perf/tflops_per_s"] / (peak_tflops * jax.device_count())
  return out


class _Preemption:
  """SIGTERM (TPU maintenance, spot reclaim, `stop.sh`) asks the loop to save and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._old = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM: saving a checkpoint and exiting")
    self.requested = True

  def agreed(self) -> bool:
    """Whether any process was asked to stop (all processes must save the same step)."""
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.asarray(self.requested)).any())

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)


def train(c: ml_collections.ConfigDict, workdir: epath.PathLike, *, reward_fn: RewardFn | None = None,
          ) -> state_lib.TrainState:
  """Runs (or resumes) the config's training in `workdir`; returns the final train state.

  `reward_fn` replaces the configured reward (see `rl.step.RewardFn`), for custom rewards.
  The config is checked first (`config_schema.validate`), then against the run already in
  `workdir` (`run_record.check_resume`); both raise before any weights load or file is written.
  """
  c = config_schema.validate(c, num_devices=jax.device_count(), num_processes=jax.process_count(),
                             check_paths=True)
  workdir = epath.Path(workdir)
  lead = jax.process_index() == 0
  resume = run_record.check_resume(c, workdir)
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
  mesh = make_mesh(c)
  log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())

  # Tokenizer: saved with the run, so evaluation and a resume read the same one.
  tok_dir = workdir / ckpt_lib.TOKENIZER
  tok_spec = c.model.tokenizer or c.model.policy_path
  tokenizer = data.load_tokenizer(tok_dir if (tok_dir / "tokenizer_config.json").exists() else tok_spec,
                                  cache_dir=workdir / "tokenizer_cache")
  ids = data.special_ids(tokenizer)

  prompts, num_bad = read_prompts(c, tokenizer)
  if lead:
    run_record.write(workdir, c, resume)
    if not (tok_dir / "tokenizer_config.json").exists():
      tokenizer.save_pretrained(str(tok_dir))
  rl = dataclasses.replace(build.rl_config(c, stop_token_ids=ids.eos_ids, pad_token_id=ids.pad_id),
                           num_logged_samples=c.log.num_samples)
  per_epoch = data.steps_per_epoch(prompts, c.data.train_batch_size)
  total_steps = per_epoch * c.data.num_epochs
  if c.total_steps > 0:
    total_steps = min(total_steps, c.total_steps)
  iterator = data.make_prompt_iterator(prompts, batch_size=c.data.train_batch_size, seed=c.seed,
                                       num_epochs=c.data.num_epochs,
                                       prompt_length_buckets=tuple(c.data.prompt_length_buckets))

  with jax.set_mesh(mesh):
    mdl = _load_models(c, mesh, len(tokenizer))
    defs = mdl.graphdefs()
    step_flops = _step_flops_fn(c, rl, mdl)
    txs = build.optimizers(c)
    st = state_lib.place(state_lib.init_state(
        nnx.state(mdl.actor), txs.actor, None if mdl.critic is None else nnx.state(mdl.critic), txs.critic,
        rm=None if mdl.rm is None else nnx.state(mdl.rm), ref=None if mdl.ref is None else nnx.state(mdl.ref)),
        mesh)
    del mdl
    reward_fn = reward_fn or _reward_fn(c, defs, prompts, tokenizer, ids)
    # With the shardings the real batches carry: jit's cache then serves step 1 the preflight's compile.
    batch_abs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding.batch_sharding(mesh, v.shape))
                 for k, v in build.abstract_batch(c).items()}
    step_fn = jit_train_step(make_train_step(rl, defs, txs, reward_fn), mesh, st, batch_abs)
    rng = jax.random.key(c.seed)
    if memory_check.enabled(c):  # compiles the step (jit reuses it) and stops here if it cannot fit
      memory_check.check(
          rl, step_fn.lower(st, batch_abs, rng),
          lambda r: jit_train_step(make_train_step(r, defs, txs, reward_fn), mesh, st, batch_abs).lower(
              st, batch_abs, rng),
          [d for d in mesh.devices.flat if d.process_index == jax.process_index()],
          prompts_per_step=c.data.train_batch_size, prompt_length=c.data.max_prompt_length,
          search_options=memory_check.search_compiler_options(jax.default_backend()))

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=c.checkpoint.max_to_keep,
                                         async_save=c.checkpoint.async_save)
    start, st = checkpointer.resume(st, iterator, mesh)
    meta = {"config": json.loads(c.to_json_best_effort()), "policy_model": nnx.merge(defs.actor, st.actor)
            .cfg.to_dict(), "steps_per_epoch": per_epoch, "total_steps": total_steps}

    writer = metrics.MetricWriter(workdir, tensorboard=c.log.tensorboard, enabled=lead)
    progress = metrics.Progress(total_steps)
    preempt = _Preemption()
    by_index = {p.record.index: p for p in prompts.prompts}
    bad_streak, saved = 0, start
    log.info("training steps %d..%d (%d per epoch, %d prompts kept of %d, %d skipped as malformed)",
             start + 1, total_steps, per_epoch, len(prompts.prompts), prompts.num_read, num_bad)
    try:
      step = start
      while step < total_steps:
        host_batch = next(iterator)
        if step == start:
          log.info("process %d/%d: first batch, prompts %s", jax.process_index(), jax.process_count(),
                   host_batch["index_b"].tolist())
        t0 = time.perf_counter()
        st, m = step_fn(st, sharding.global_batch(host_batch, mesh, data.DEVICE_KEYS), rng)
        m = jax.device_get(m)
        seconds = time.perf_counter() - t0
        step += 1
        # The logged rollouts (arrays); scalar rollout/* metrics (slot_utilization, ...) stay.
        rollout = {k: m.pop(k) for k in list(m) if k.startswith("rollout/") and np.ndim(m[k])}
        skipped = float(m.get("actor/skipped_updates", 0) + m.get("critic/skipped_updates", 0))
        bad = skipped > 0 or not np.isfinite(m["reward/mean"])
        bad_streak = bad_streak + 1 if bad else 0
        lengths = {k: m.pop(k) for k in list(m) if k.startswith("lengths/")}
        m |= _perf(*step_flops(m | lengths, host_batch["input_ids_bp"].shape[1]), seconds,
                   c.log.get("peak_tflops", 0.0))
        m |= {"throughput/tokens_per_s": float(m["tokens/total"]) / seconds, "time/step_s": seconds,
              "train/epoch": (step - 1) // per_epoch, "data/skipped_records": num_bad,
              "data/filtered_prompts": prompts.num_dropped, "system/peak_host_gib": metrics.peak_host_gib()}
        writer.scalars(step, m)
        if step % c.log.every_steps == 0 or step == total_steps:
          log.info(progress.line(step, seconds, float(m["tokens/total"]), float(m["reward/mean"])))
        if bad:
          log.warning("step %d: non-finite loss or reward, update skipped (%d in a row)", step, bad_streak)
          if bad_streak >= c.max_bad_steps:
            raise NonFiniteError(f"{bad_streak} steps in a row with non-finite losses (max_bad_steps="
                                 f"{c.max_bad_steps}); stopping. The last good checkpoint is step {saved} "
                                 f"in {checkpointer.directory}")
        if c.log.samples_every_steps and step % c.log.samples_every_steps == 0 and rollout:
          writer.samples(step, _sample_rows(rollout, by_index, tokenizer))
        stop = preempt.agreed()
        if not bad_streak and (step % c.checkpoint.every_steps == 0 or step == total_steps or stop):
          checkpointer.save(step, st, iterator, meta | {"step": step})
          saved = step
        if stop:
          log.warning("stopped by SIGTERM at step %d, checkpoint saved", step)
          break
    finally:
      checkpointer.wait()
      checkpointer.close()
      writer.close()
      preempt.restore()
  return st


def _sample_rows(rollout: dict, by_index: dict, tokenizer) -> list[dict]:
  rows = []
  for i, resp, mask, score in zip(rollout["rollout/index_b"], rollout["rollout/response_br"],
                                  rollout["rollout/mask_br"], rollout["rollout/score_b"]):
    p = by_index[int(i)]
    rows.append({"index": int(i), "prompt": p.text,
                 "response": tokenizer.decode(np.asarray(resp)[np.asarray(mask).astype(bool)]),
                 "reward": float(score)})
  return rows

