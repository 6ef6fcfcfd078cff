"""The train state pytree and its optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from grlo_jax import sharding


@struct.dataclass
class TrainState:
  """Everything the step reads and writes; donated to it (frozen weights pass through aliased)."""

  step: jax.Array  # int32 scalar: RL steps done
  actor: nnx.State
  actor_opt: optax.OptState
  critic: nnx.State | None = None
  critic_opt: optax.OptState | None = None
  rm: nnx.State | None = None  # reward model (score head), never updated
  ref: nnx.State | None = None  # reference policy when a KL term needs it, never updated


def make_optimizer(lr: float, weight_decay: float = 0.01, grad_clip: float = 1.0, warmup_steps: int = 0,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, decay_steps: int = 0,
                   min_lr_ratio: float = 0.0) -> optax.GradientTransformation:
  """AdamW with global-norm clipping, an optional linear warm-up, then a constant rate (verl's
  default) or, with `decay_steps` > 0, a cosine decay to `min_lr_ratio * lr` over the steps after
  the warm-up (verl's `lr_scheduler_type="cosine"`)."""
  after = (optax.constant_schedule(lr) if decay_steps <= 0 else
           optax.cosine_decay_schedule(lr, max(decay_steps - warmup_steps, 1), alpha=min_lr_ratio))
  schedule = (after if warmup_steps <= 0 else
              optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after], [warmup_steps]))
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  return optax.chain(*parts, optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))


def optimizer_from_config(o, decay_steps: int = 0) -> optax.GradientTransformation:
  """`make_optimizer` from an `optim` config section (lr, weight_decay, grad_clip, warmup_steps,
  betas, and `min_lr_ratio` where the section has one); `decay_steps` > 0 decays by cosine."""
  return make_optimizer(o.lr, weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup_steps=o.warmup_steps,
                        b1=o.betas[0], b2=o.betas[1], decay_steps=decay_steps,
                        min_lr_ratio=o.get("min_lr_ratio", 0.0))


def init_state(actor: nnx.State, actor_tx: optax.GradientTransformation, critic: nnx.State | None = None,
               critic_tx: optax.GradientTransformation | None = None, rm: nnx.State | None = None,
               ref: nnx.State | None = None) -> TrainState:
  """A fresh state. `ref` must not share buffers with `actor` (the actor's are donated)."""
  return TrainState(step=jnp.zeros((), jnp.int32), actor=actor, actor_opt=actor_tx.init(actor),
                    critic=critic, critic_opt=None if critic is None else critic_tx.init(critic),
                    rm=rm, ref=ref)


def place(tree, mesh: Mesh | None = None):
  """Put a state (or frozen weights) on its shardings, so every call of the step sees one layout."""
  mesh = sharding.single_device_mesh() if mesh is None else mesh
  return jax.device_put(tree, sharding.tree_shardings(tree, mesh))
