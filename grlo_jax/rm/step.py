"""The reward-model train step: one jitted update on a batch of pairs, gradients accumulated.

  step = jit_rm_step(make_rm_step(graphdef, tx, grad_accum_steps=2, use_margin=False), mesh, state, batch)
  state, metrics = step(state, batch)

The state is `rl.state.TrainState` with the reward model as its `actor` (its score head, HF
*ForSequenceClassification's convention: label 0 at each row's last real token), so the same
Orbax checkpointer saves it and a workdir loads as `model.rm_path` like a policy checkpoint.
Chosen and rejected sides of a micro-batch run as one [2b, T] forward. Micro-batches are the RL
passes' (`rl.layout.split`: strided, every data shard in each) and their gradients are summed by
`rl.layout.accumulate`, one micro-batch's activations alive at a time. The loss of a batch of B
pairs is the mean BT loss over its real pairs (`weight_b`); micro-batch gradients are of the
loss *sums* divided by the batch's count, so their sum is the full batch's gradient exactly
(up to float addition order).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from grlo_jax import sharding
from grlo_jax.rl import layout
from grlo_jax.rl.state import TrainState
from grlo_jax.rm import loss as loss_lib

Batch = dict[str, jax.Array]


def pair_scores(graphdef: nnx.GraphDef, params, batch: Batch, frozen_layers: int = 0) -> tuple[jax.Array, jax.Array]:
  """(chosen [b], rejected [b]) float32 scores of a batch of right-padded pairs."""
  model = nnx.merge(graphdef, params)
  ids_bt = jnp.concatenate([batch["chosen_ids_bt"], batch["rejected_ids_bt"]], axis=0)
  mask_bt = jnp.concatenate([batch["chosen_mask_bt"], batch["rejected_mask_bt"]], axis=0)
  ids_bt = sharding.constrain(ids_bt, ("batch", None))
  mask_bt = sharding.constrain(mask_bt, ("batch", None))
  s_b = model(ids_bt, mask_bt, frozen_layers=frozen_layers)[:, 0].astype(jnp.float32)
  b = batch["chosen_ids_bt"].shape[0]
  return s_b[:b], s_b[b:]


def hold_frozen(updates, frozen_layers: int):
  """`updates` with the embedding's and the bottom `frozen_layers` blocks' set to zero (their
  gradients already are; decoupled weight decay would still move them)."""

  def hold(path, u):
    keys = [getattr(k, "key", None) for k in path]
    if keys[0] == "embed_vd":
      return jnp.zeros_like(u)
    return u.at[:frozen_layers].set(0) if keys[0] == "blocks" else u

  return jax.tree_util.tree_map_with_path(hold, updates) if frozen_layers else updates


def make_rm_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *, grad_accum_steps: int = 1,
                 use_margin: bool = False,
                 frozen_layers: int = 0) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """`step(state, batch) -> (state, metrics)`: metrics are means over the batch's real pairs
  (loss, pair_accuracy, margin, score/chosen_mean, score/rejected_mean), the gradient norm, and the
  batch's pair and real-token counts (`pairs`, `tokens`). `frozen_layers` = k trains only the
  blocks above the k-th, the final norm and the score head (`Transformer.hidden`)."""

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    a = grad_accum_steps
    b = batch["chosen_ids_bt"].shape[0]
    if b % a:
      raise ValueError(f"a batch of {b} pairs does not split into {a} micro-batches")
    total = jnp.maximum(jnp.sum(batch["weight_b"].astype(jnp.float32)), 1.0)
    micro = jax.tree.map(lambda v: layout.split(v, a), batch)  # [A, B / A, ...], strided as the RL passes

    def loss_fn(params, mb, total):
      c_b, r_b = pair_scores(graphdef, params, mb, frozen_layers)
      sums = loss_lib.pair_metrics(c_b, r_b, mb["weight_b"], mb["margin_b"] if use_margin else None)
      return sums["loss"] / total, sums

    grads, sums = layout.accumulate(loss_fn, state.actor, micro, total)
    updates, opt = tx.update(grads, state.actor_opt, state.actor)
    params = optax.apply_updates(state.actor, hold_frozen(updates, frozen_layers))
    tokens = jnp.sum(batch["chosen_mask_bt"]) + jnp.sum(batch["rejected_mask_bt"])  # real tokens, every process's
    metrics = loss_lib.means(sums) | {"grad_norm": optax.global_norm(grads), "pairs": sums["count"], "tokens": tokens}
    return state.replace(step=state.step + 1, actor=params, actor_opt=opt), metrics

  return step


def make_eval_fn(graphdef: nnx.GraphDef, use_margin: bool = False) -> Callable[[nnx.State, Batch], dict]:
  """`eval(params, batch) -> pair_metrics sums` (add over batches, then `loss.means`)."""

  def evaluate(params, batch: Batch) -> dict:
    c_b, r_b = pair_scores(graphdef, params, batch)
    return loss_lib.pair_metrics(c_b, r_b, batch["weight_b"], batch["margin_b"] if use_margin else None)

  return evaluate


def batch_shardings(mesh: Mesh, batch: Batch) -> dict:
  return {k: sharding.batch_sharding(mesh, v.shape) for k, v in batch.items()}


def jit_rm_step(step, mesh: Mesh, state: TrainState, batch: Batch):
  """Jit with explicit shardings (the state's from its logical axes, the batch's over the data
  axes) and the state donated, as `rl.step.jit_train_step`. `state`, `batch` may be abstract."""
  state_sh = sharding.tree_shardings(state, mesh)
  return jax.jit(step, in_shardings=(state_sh, batch_shardings(mesh, batch)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)


def jit_eval(evaluate, mesh: Mesh, params, batch: Batch):
  return jax.jit(evaluate, in_shardings=(sharding.tree_shardings(params, mesh), batch_shardings(mesh, batch)),
                 out_shardings=sharding.replicated(mesh))
