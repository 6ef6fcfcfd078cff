"""Training checkpoints: Orbax CheckpointManager over the train state, the data iterator and meta.

Layout under the workdir (local or gs://):

  checkpoints/<step>/policy/   the actor's parameters, as an Orbax model folder's `params/`
  checkpoints/<step>/state/    the rest of the train state: step, optimizer moments, critic
  checkpoints/<step>/meta/     JSON: step, config, the policy's model config, the data position
  tokenizer/                   the policy tokenizer, saved once at start

The data position is the grain iterator's state, the same on every process (all hosts step
through the same global batches, each taking its rows), so it lives in `meta` and restores onto
any number of processes. Frozen weights (reward model, reference) are not saved: they reload
from their paths. Saves are
asynchronous and atomic (Orbax finalises a step folder only when complete), so a run killed
mid-save resumes from the previous step. Restores go onto whatever mesh is current.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx, traverse_util
from jax.sharding import Mesh

from grlo_jax import sharding
from grlo_jax.models import gguf
from grlo_jax.models.config import ModelConfig
from grlo_jax.rl.state import TrainState

CHECKPOINTS = "checkpoints"
TOKENIZER = "tokenizer"
ITEMS = ("policy", "state", "meta")


def _key(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _to_named(tree: Any) -> dict:
  """A pytree as a nested dict keyed by its path names (readable in the checkpoint)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return traverse_util.unflatten_dict({tuple(_key(k) for k in path): leaf for path, leaf in flat})


def _from_named(named: dict, like: Any) -> Any:
  flat = traverse_util.flatten_dict(named)
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  return jax.tree.unflatten(treedef, [flat[tuple(_key(k) for k in path)] for path, _ in paths])


def _rest(state: TrainState) -> dict:
  """What `state/` holds: everything trainable but the policy's weights."""
  return _to_named({"step": state.step, "actor_opt": state.actor_opt, "critic": state.critic,
                    "critic_opt": state.critic_opt})


def _abstract_on(tree: Any, mesh: Mesh) -> Any:
  """Shape, dtype and target sharding of every leaf of `tree` on `mesh`."""
  def one(x, s):
    if isinstance(x, nnx.Variable):
      return x.replace(jax.ShapeDtypeStruct(x.value.shape, x.value.dtype, sharding=s))
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  return jax.tree.map(one, tree, sharding.tree_shardings(tree, mesh),
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


def _absolute(path: epath.PathLike) -> epath.Path:
  """A local path made absolute (symlinks kept, so logged paths read as given); gs:// as is."""
  return epath.Path(path if "://" in str(path) else os.path.abspath(path))


class Checkpointer:
  """`CheckpointManager` for the trainer: `save(step, state, it, meta)`, `restore(...)`."""

  def __init__(self, workdir: epath.PathLike, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = _absolute(workdir) / CHECKPOINTS  # Orbax refuses relative paths
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def resume(self, like: TrainState, iterator: grain.DatasetIterator, mesh: Mesh) -> tuple[int, TrainState]:
    """(the newest saved step, `like` restored from it), or (0, `like`) when nothing is saved."""
    start = self.latest_step() or 0
    if not start:
      return 0, like
    logging.getLogger(__name__).info("resuming from %s/%d", self.directory, start)
    return start, self.restore(start, like, iterator, mesh)

  def save(self, step: int, state: TrainState, iterator: grain.DatasetIterator, meta: dict) -> None:
    args = ocp.args.Composite(
        policy=ocp.args.StandardSave(nnx.to_pure_dict(state.actor)),
        state=ocp.args.StandardSave(_rest(state)),
        meta=ocp.args.JsonSave(meta | {"data": iterator.get_state()}))
    self.manager.save(step, args=args, force=True)

  def restore(self, step: int, like: TrainState, iterator: grain.DatasetIterator, mesh: Mesh) -> TrainState:
    """`like` with the saved values, each on its sharding on `mesh`; `iterator` moved to the saved
    position. `like` may be abstract; its frozen weights (rm, ref) are kept."""
    abstract = _abstract_on(like, mesh)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        policy=ocp.args.StandardRestore(nnx.to_pure_dict(abstract.actor)),
        state=ocp.args.StandardRestore(_rest(abstract)),
        meta=ocp.args.JsonRestore()))
    iterator.set_state(restored.meta["data"])
    rest = _from_named(restored.state, {"step": like.step, "actor_opt": like.actor_opt,
                                        "critic": like.critic, "critic_opt": like.critic_opt})
    actor = jax.tree.map(lambda x: x, like.actor)  # a copy of the structure to fill
    nnx.replace_by_pure_dict(actor, restored.policy)
    return like.replace(actor=actor, **rest)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def stored_mismatches(step_dir: epath.PathLike, like: TrainState) -> tuple[list[str], list[str]]:
  """How a step folder's saved tensors differ from `like`'s (abstract is fine), from Orbax's
  metadata alone (no array is read): (tensors that would not fit: another shape, missing or
  extra; tensors stored in another dtype, which a restore casts). Each names the tensor."""
  step_dir = _absolute(step_dir)
  want = {"policy": nnx.to_pure_dict(like.actor), "state": _rest(like)}
  misfit, cast = [], []
  with ocp.StandardCheckpointer() as ckptr:
    for item, tree in want.items():
      meta = ckptr.metadata(step_dir / item).item_metadata
      stored = traverse_util.flatten_dict(_to_named(meta.tree if hasattr(meta, "tree") else meta), sep="/")
      needed = traverse_util.flatten_dict(tree, sep="/")
      for name in sorted(set(stored) | set(needed)):
        a, b = stored.get(name), needed.get(name)
        show = lambda x: f"{tuple(x.shape)} {x.dtype}"
        if a is None:
          misfit.append(f"{item}/{name}: not in the checkpoint, this config needs {show(b)}")
        elif b is None:
          misfit.append(f"{item}/{name}: in the checkpoint ({show(a)}), this config has no such tensor")
        elif tuple(a.shape) != tuple(b.shape):
          misfit.append(f"{item}/{name}: stored {show(a)}, this config needs {show(b)}")
        elif str(a.dtype) != str(b.dtype):
          cast.append(f"{item}/{name}: stored {a.dtype}, restored as {b.dtype}")
  return misfit, cast


def read_meta(step_dir: epath.PathLike) -> dict:
  return json.loads((epath.Path(step_dir) / "meta" / "metadata").read_text())


def find_step_dir(path: epath.PathLike) -> epath.Path | None:
  """The newest complete step folder of a training workdir, or `path` itself if it is one;
  None when `path` is neither."""
  path = epath.Path(path)
  if (path / "meta").is_dir() and (path / "policy").is_dir():
    return path
  root = path / CHECKPOINTS
  if not root.is_dir():
    return None
  steps = ocp.utils.checkpoint_steps(root)  # finalised steps only
  return root / str(max(steps)) if steps else None


def checkpoint_step(path: epath.PathLike) -> int:
  """The training step a model path holds: its step folder's (or its workdir's newest); 0 for a
  model that is not a training checkpoint (the model before training)."""
  step_dir = find_step_dir(path)
  return 0 if step_dir is None else int(read_meta(step_dir).get("step", step_dir.name))


def policy_folder(path: epath.PathLike) -> tuple[ModelConfig, epath.Path] | None:
  """(policy model config, params folder) of a training checkpoint, or None if `path` is not one."""
  step_dir = find_step_dir(path)
  if step_dir is None:
    return None
  return ModelConfig.from_dict(read_meta(step_dir)["policy_model"]), step_dir / "policy"


def tokenizer_folder(path: epath.PathLike) -> str | None:
  """The tokenizer that goes with a model path: the folder's own (an HF folder), the one saved
  with a training run (its workdir or one of its step folders), a GGUF file's (its metadata), else
  None."""
  path = epath.Path(path)
  if (path / "tokenizer_config.json").exists():
    return str(path)
  if (found := gguf.find_gguf(path)) is not None:
    return str(found)
  for root in (path, path.parent.parent):
    if (root / TOKENIZER / "tokenizer_config.json").exists():
      return str(root / TOKENIZER)
  return None
