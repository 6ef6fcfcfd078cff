"""The reward-model outer loop: pairs -> jitted BT step -> metrics -> checkpoint, resumable.

  state = rm.trainer.train_rm(config, workdir)      # what `launch/train_rm.py` runs

The workdir is laid out as an RL run's (`checkpoint.py`): `checkpoints/<step>/policy/` holds the
reward model's parameters (score head included) and `meta` its model config, so
`load_pretrained(workdir)` and `--config.model.rm_path=workdir` load it unchanged; `tokenizer/`,
`config.json` (and `config.resume-<k>.json`), `metrics.jsonl` and TensorBoard logs beside them.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
from flax import nnx

from grlo_jax import checkpoint as ckpt_lib
from grlo_jax import data, metrics, models, run_record, sharding
from grlo_jax.data import preferences
from grlo_jax.rl import state as state_lib
from grlo_jax.rm import loss as loss_lib
from grlo_jax.rm import step as step_lib

log = logging.getLogger(__name__)


def validate(c: ml_collections.ConfigDict) -> None:
  """Errors naming each bad key (all at once), before anything loads."""
  bad = []
  pos = {"data.batch_size": c.data.batch_size, "data.eval_batch_size": c.data.eval_batch_size,
         "data.max_length": c.data.max_length, "data.num_epochs": c.data.num_epochs,
         "grad_accum_steps": c.grad_accum_steps, "eval_every_steps": c.eval_every_steps,
         "checkpoint.every_steps": c.checkpoint.every_steps, "checkpoint.max_to_keep": c.checkpoint.max_to_keep,
         "log.every_steps": c.log.every_steps}
  bad += [f"{k}={v}: must be >= 1" for k, v in pos.items() if v < 1]
  if c.total_steps < 0:
    bad.append(f"total_steps={c.total_steps}: must be >= 0 (0 = data.num_epochs passes)")
  if c.optim.lr < 0:
    bad.append(f"optim.lr={c.optim.lr}: must be >= 0")
  if c.optim.lr_scheduler_type not in ("constant", "cosine"):
    bad.append(f"optim.lr_scheduler_type={c.optim.lr_scheduler_type!r}: must be 'constant' or 'cosine'")
  if not 0 <= c.optim.min_lr_ratio <= 1:
    bad.append(f"optim.min_lr_ratio={c.optim.min_lr_ratio}: must be in [0, 1]")
  if c.grad_accum_steps >= 1 and c.data.batch_size % c.grad_accum_steps:
    bad.append(f"data.batch_size={c.data.batch_size} is not a multiple of grad_accum_steps={c.grad_accum_steps}")
  if not c.model.base_path and c.model.base_arch not in models.PRESETS:
    bad.append(f"model.base_arch={c.model.base_arch!r}: not a preset ({', '.join(sorted(models.PRESETS))})")
  elif not c.model.base_path or epath.Path(c.model.base_path).exists():
    layers = _model_config(c).num_layers
    if not 0 <= c.model.frozen_layers <= layers:
      bad.append(f"model.frozen_layers={c.model.frozen_layers}: must be in [0, {layers}] (the model's blocks)")
  if not c.model.tokenizer and not c.model.base_path:
    bad.append("model.tokenizer='' takes model.base_path's, but model.base_path is empty")
  if c.model.base_path and not epath.Path(c.model.base_path).exists():
    bad.append(f"model.base_path={c.model.base_path!r}: does not exist")
  for key in ("train_files", "eval_files"):
    for part in filter(None, str(c.data[key]).split(",")):
      if not part.startswith(preferences.PLANTED_PREFIX) and not epath.Path(part).is_file():
        bad.append(f"data.{key}: {part} does not exist")
  if not c.data.train_files:
    bad.append("data.train_files: must be set")
  if bad:
    raise ValueError("invalid reward-model config:\n  " + "\n  ".join(bad))


def _model_config(c: ml_collections.ConfigDict) -> models.ModelConfig:
  """The reward model's shapes without weights: the base's config file, else `model.base_arch`."""
  dtypes = dict(param_dtype=c.model.param_dtype, dtype=c.model.compute_dtype, remat=c.model.remat,
                attention=c.model.attention, head="score", num_labels=1)
  cfg = run_record._model_config(c.model.base_path) if c.model.base_path else None  # noqa: SLF001
  return (cfg or models.preset(c.model.base_arch)).replace(**dtypes)


def _optimizer(c: ml_collections.ConfigDict, total_steps: int = 0):
  """AdamW; with `optim.lr_scheduler_type="cosine"` the rate decays over the run's `total_steps`."""
  return state_lib.optimizer_from_config(c.optim, total_steps if c.optim.lr_scheduler_type == "cosine" else 0)


def state_shapes(c: ml_collections.ConfigDict) -> state_lib.TrainState:
  """The shape-only train state a checkpoint of `c` holds (for the resume guard)."""
  abs_params = models.loading.abstract(_model_config(c))[1]
  return jax.eval_shape(lambda p: state_lib.init_state(p, _optimizer(c)), abs_params)


def load_model(c: ml_collections.ConfigDict, mesh) -> models.Transformer:
  """The base model with a new score head (a model that already has one keeps it), or a random one."""
  cfg = _model_config(c)
  if c.model.base_path:
    log.info("reward model: loading %s with a score head", c.model.base_path)
    return models.load_pretrained(c.model.base_path, dtype=cfg.param_dtype, mesh=mesh, compute_dtype=cfg.dtype,
                                  remat=cfg.remat, attention=cfg.attention, head="score", num_labels=1)
  log.warning("reward model: no model.base_path, initialising %r at random", c.model.base_arch)
  return models.init_model(cfg, seed=c.seed, mesh=mesh)


def evaluate(eval_fn, params, batches: list[dict]) -> dict[str, float]:
  """Mean pair metrics over every held-out pair (`batches` on device); one transfer to the host."""
  total = functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), (eval_fn(params, b) for b in batches))
  return {k: float(v) for k, v in jax.device_get(loss_lib.means(total)).items()}


def _device_batch(host: dict, mesh) -> dict:
  return sharding.global_batch(host, mesh, preferences.DEVICE_KEYS)


def train_rm(c: ml_collections.ConfigDict, workdir: epath.PathLike) -> state_lib.TrainState:
  """Trains (or resumes) the reward model of config `c` in `workdir`; returns the final state."""
  validate(c)
  workdir = epath.Path(workdir)
  lead = jax.process_index() == 0
  resume = run_record.check_resume(c, workdir, state_shapes=state_shapes)
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh({"data": c.mesh.data, "fsdp": c.mesh.fsdp, "tensor": c.mesh.tensor},
                            dcn_data=c.mesh.dcn_data)
  tok_dir = workdir / ckpt_lib.TOKENIZER
  tok_spec = c.model.tokenizer or ckpt_lib.tokenizer_folder(c.model.base_path) or c.model.base_path
  tokenizer = data.load_tokenizer(tok_dir if (tok_dir / "tokenizer_config.json").exists() else tok_spec,
                                  cache_dir=workdir / "tokenizer_cache")
  kw = dict(max_length=c.data.max_length, skip_bad=c.data.skip_bad_records,
            chat_template_kwargs=c.data.chat_template_kwargs.to_dict())
  train = preferences.load_pairs(c.data.train_files, tokenizer, **kw)
  held = preferences.load_pairs(c.data.eval_files, tokenizer, **kw) if c.data.eval_files else None
  per_epoch = preferences.steps_per_epoch(train, c.data.batch_size)
  if per_epoch == 0:
    raise ValueError(f"data.train_files={c.data.train_files!r}: {len(train.pairs)} pairs kept of "
                     f"{train.num_read} read ({train.num_skipped} bad, skipped) make no full batch of "
                     f"data.batch_size={c.data.batch_size}")
  total_steps = per_epoch * c.data.num_epochs
  if c.total_steps > 0:
    total_steps = min(total_steps, c.total_steps)
  if lead:
    run_record.write(workdir, c, resume)
    if not (tok_dir / "tokenizer_config.json").exists():
      tokenizer.save_pretrained(str(tok_dir))
  buckets = tuple(c.data.length_buckets)
  iterator = preferences.make_pair_iterator(train, batch_size=c.data.batch_size, seed=c.seed,
                                            num_epochs=c.data.num_epochs, length_buckets=buckets)
  # Held-out pairs go to the devices once, not at every evaluation.
  eval_batches = [_device_batch(b, mesh) for b in preferences.eval_batches(held, c.data.eval_batch_size, buckets)
                  ] if held and held.pairs else []

  with jax.set_mesh(mesh):
    model = load_model(c, mesh)
    graphdef, params = nnx.split(model)
    del model
    tx = _optimizer(c, total_steps)
    st = state_lib.place(state_lib.init_state(params, tx), mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=c.checkpoint.max_to_keep,
                                         async_save=c.checkpoint.async_save)
    start, st = checkpointer.resume(st, iterator, mesh)
    meta = {"config": run_record.config_dict(c), "policy_model": nnx.merge(graphdef, st.actor).cfg.to_dict(),
            "steps_per_epoch": per_epoch, "total_steps": total_steps, "kind": "reward_model"}
    step_fn, eval_fn = None, None
    writer = metrics.MetricWriter(workdir, tensorboard=c.log.tensorboard, enabled=lead)
    progress = metrics.Progress(total_steps)
    log.info("reward model: steps %d..%d (%d per epoch), %d pairs kept of %d (%d bad, skipped), %d held out",
             start + 1, total_steps, per_epoch, len(train.pairs), train.num_read, train.num_skipped,
             len(held.pairs) if held else 0)
    try:
      step = start
      while step < total_steps:
        batch = _device_batch(next(iterator), mesh)
        if step_fn is None:
          step_fn = step_lib.jit_rm_step(step_lib.make_rm_step(graphdef, tx, grad_accum_steps=c.grad_accum_steps,
                                                               use_margin=c.loss.use_margin,
                                                               frozen_layers=c.model.frozen_layers), mesh, st, batch)
        t0 = time.perf_counter()
        st, m = step_fn(st, batch)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        seconds = time.perf_counter() - t0
        step += 1
        tokens = m.pop("tokens")
        m |= {"time/step_s": seconds, "throughput/tokens_per_s": tokens / seconds,
              "train/epoch": (step - 1) // per_epoch, "data/skipped_records": train.num_skipped,
              "system/peak_host_gib": metrics.peak_host_gib()}
        if eval_batches and (step % c.eval_every_steps == 0 or step == total_steps):
          if eval_fn is None:
            eval_fn = step_lib.jit_eval(step_lib.make_eval_fn(graphdef, c.loss.use_margin), mesh, st.actor,
                                        eval_batches[0])
          ev = evaluate(eval_fn, st.actor, eval_batches)
          m |= {f"eval/{k}": v for k, v in ev.items()}
          log.info("step %d: held-out pair accuracy %.4f (loss %.4f, margin %+.3f, %d pairs)", step,
                   ev["pair_accuracy"], ev["loss"], ev["margin"], len(held.pairs))
        writer.scalars(step, m)
        if step % c.log.every_steps == 0 or step == total_steps:
          log.info("%s | acc %.3f", progress.line(step, seconds, tokens, m["loss"], label="loss"),
                   m["pair_accuracy"])
        if step % c.checkpoint.every_steps == 0 or step == total_steps:
          checkpointer.save(step, st, iterator, meta | {"step": step})
    finally:
      checkpointer.wait()
      checkpointer.close()
      writer.close()
  return st
