"""The grain pipeline: encoded prompts -> shuffled, host-sharded, left-padded numpy batches.

Order of operations, all on a random-access `grain.MapDataset` so that the iterator state is
one integer and a restore continues exactly where it stopped:

  source(prompts) -> shuffle(seed, reshuffled each epoch) -> batch(global batch, drop remainder)
  -> this host's rows of each global batch, left-padded -> repeat(num_epochs)

Shuffling and batching are global (the same on every host), and each host then takes its own
contiguous rows: hosts see disjoint prompts, always run the same number of steps, and the
global order does not depend on the number of hosts.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import jax
import numpy as np

from grlo_jax.data import prompts as prompts_lib

STYLE_IDS = {"model": 0, "rule": 1}
# Batch fields that go to the device (int32); the rest are numpy object arrays for the host:
# str, except `messages_b` (each row a tuple of {"role", "content"}), which a reward model with
# another tokenizer needs to format the conversation in its own chat template.
DEVICE_KEYS = ("input_ids_bp", "attention_mask_bp", "index_b", "style_b")
HOST_KEYS = ("ground_truth_b", "data_source_b", "raw_prompt_b", "messages_b")


def steps_per_epoch(prompts: prompts_lib.PromptSet, batch_size: int) -> int:
  """Full global batches in one pass over the kept prompts (verl drops the last partial one)."""
  return len(prompts.prompts) // batch_size


def bucket_width(longest: int, max_prompt_length: int, buckets: Sequence[int] = ()) -> int:
  """The padded prompt width of a batch whose longest prompt has `longest` tokens: the smallest
  of `buckets` that holds it, else `max_prompt_length` (no buckets: always max_prompt_length).
  Each width the run meets compiles the step once."""
  fits = [w for w in buckets if longest <= w <= max_prompt_length]
  return min(fits) if fits else max_prompt_length


def collate(
    prompts: Sequence[prompts_lib.EncodedPrompt], *, max_prompt_length: int, pad_id: int,
) -> dict[str, np.ndarray]:
  """Left-pads prompts to `max_prompt_length` (static shapes for jit) into a numpy batch."""
  b = len(prompts)
  input_ids_bp = np.full((b, max_prompt_length), pad_id, np.int32)
  attention_mask_bp = np.zeros((b, max_prompt_length), np.int32)
  for row, prompt in enumerate(prompts):
    n = len(prompt.ids_p)
    if n > max_prompt_length:
      raise ValueError(f"prompt {prompt.record.index} has {n} > {max_prompt_length} tokens")
    # Left padding puts every prompt's last token in the last column, where generation starts.
    input_ids_bp[row, max_prompt_length - n:] = prompt.ids_p
    attention_mask_bp[row, max_prompt_length - n:] = 1

  def objects(values: list) -> np.ndarray:
    out = np.empty(b, dtype=object)
    for i, v in enumerate(values):  # element-wise, so tuples stay single objects
      out[i] = v
    return out

  return {
      "input_ids_bp": input_ids_bp,
      "attention_mask_bp": attention_mask_bp,
      "index_b": np.array([p.record.index for p in prompts], np.int32),
      "style_b": np.array([STYLE_IDS[p.record.style] for p in prompts], np.int32),
      "ground_truth_b": objects([p.record.ground_truth for p in prompts]),
      "data_source_b": objects([p.record.data_source for p in prompts]),
      "raw_prompt_b": objects([p.text for p in prompts]),
      "messages_b": objects([p.record.messages for p in prompts]),
  }


def host_rows(batch_size: int, shard_index: int | None = None, shard_count: int | None = None) -> slice:
  """This host's rows of a global batch: `batch_size // shard_count` of them, those of
  `shard_index` (defaults: `jax.process_index()` of `jax.process_count()`)."""
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if batch_size % shard_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by shard_count {shard_count}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  rows = batch_size // shard_count
  return slice(shard_index * rows, (shard_index + 1) * rows)


def make_prompt_dataset(
    prompts: prompts_lib.PromptSet,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    prompt_length_buckets: Sequence[int] = (),
) -> grain.MapDataset:
  """The batched dataset: `num_epochs * steps_per_epoch` elements (endless for None).

  `batch_size` is the global batch (prompts per step); each of `shard_count` hosts (default
  `jax.process_count()`) gets `batch_size // shard_count` rows, those of `shard_index` (default
  `jax.process_index()`). With `prompt_length_buckets` a batch is padded to the smallest bucket
  that holds the global batch's longest prompt (`bucket_width`; the same on every host) instead
  of `max_prompt_length`.
  """
  rows = host_rows(batch_size, shard_index, shard_count)
  if steps_per_epoch(prompts, batch_size) == 0:
    raise ValueError(f"{len(prompts.prompts)} prompts make no full batch of {batch_size}")
  def pad(global_b):
    width = bucket_width(max(len(p.ids_p) for p in global_b), prompts.max_prompt_length, prompt_length_buckets)
    return collate(global_b[rows], max_prompt_length=width, pad_id=prompts.pad_id)

  # grain reshuffles epoch e with seed + e; hashing the seed first keeps seed s's epoch 1 from
  # being seed s + 1's epoch 0.
  shuffle_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
  return (grain.MapDataset.source(prompts.prompts)
          .shuffle(seed=shuffle_seed)
          .batch(batch_size, drop_remainder=True, batch_fn=pad)
          .repeat(num_epochs))


def make_prompt_iterator(
    prompts: prompts_lib.PromptSet,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    read_options: grain.ReadOptions | None = None,
    prompt_length_buckets: Sequence[int] = (),
) -> grain.DatasetIterator:
  """A checkpointable iterator over this host's batches (see `make_prompt_dataset`).

  `get_state()` / `set_state()` (or Orbax via `grain.checkpoint`) resume exactly at the next
  batch. By default one background thread prepares up to two batches ahead.
  """
  dataset = make_prompt_dataset(prompts, batch_size=batch_size, seed=seed, num_epochs=num_epochs,
                                shard_index=shard_index, shard_count=shard_count,
                                prompt_length_buckets=prompt_length_buckets)
  read_options = read_options or grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
  return iter(dataset.to_iter_dataset(read_options))
