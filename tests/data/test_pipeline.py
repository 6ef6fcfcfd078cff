"""The grain prompt pipeline: padding, filtering, shuffling, sharding, and exact resume."""

import functools
import json
import logging

import numpy as np
import pytest

from grlo_jax import data


@functools.lru_cache
def tiny_prompts(max_prompt_length=64):
  tok = data.build_tiny_tokenizer()
  return data.encode_prompts(data.read_records(data.TINY_PROMPTS), tok, max_prompt_length=max_prompt_length)


def batches(prompts, **kwargs):
  return list(data.make_prompt_iterator(prompts, **{"shard_index": 0, "shard_count": 1} | kwargs))


def indices(batch_list):
  return [b["index_b"].tolist() for b in batch_list]


def test_left_padded_batches():
  prompts = tiny_prompts()
  by_index = {p.record.index: p for p in prompts.prompts}
  out = batches(prompts, batch_size=8, seed=0, num_epochs=1)
  assert len(out) == data.steps_per_epoch(prompts, 8) == 8
  for b in out:
    assert set(b) == set(data.DEVICE_KEYS) | set(data.HOST_KEYS)
    assert b["input_ids_bp"].shape == b["attention_mask_bp"].shape == (8, 64)
    assert b["input_ids_bp"].dtype == b["attention_mask_bp"].dtype == b["index_b"].dtype == np.int32
    for row, i in enumerate(b["index_b"]):
      p = by_index[i]
      n = len(p.ids_p)
      np.testing.assert_array_equal(b["attention_mask_bp"][row], [0] * (64 - n) + [1] * n)
      np.testing.assert_array_equal(b["input_ids_bp"][row, 64 - n:], p.ids_p)
      assert (b["input_ids_bp"][row, :64 - n] == prompts.pad_id).all()
      assert b["raw_prompt_b"][row] == p.text and p.text.endswith("<|im_start|>assistant\n")
      assert b["ground_truth_b"][row] == p.record.ground_truth
      assert b["data_source_b"][row] == p.record.data_source
      assert b["messages_b"][row] == p.record.messages
      assert b["style_b"][row] == data.STYLE_IDS[p.record.style]
  styles = np.concatenate([b["style_b"] for b in out])
  assert set(styles.tolist()) == {0, 1}


def test_over_long_prompts_filtered_and_counted(caplog):
  tok = data.build_tiny_tokenizer()
  recs = data.read_records(data.TINY_PROMPTS)
  lengths = [len(tok.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=True,
                                         return_dict=False)) for r in recs]
  limit = int(np.median(lengths))
  want_kept = {r.index for r, n in zip(recs, lengths) if n <= limit}
  assert 0 < len(want_kept) < len(recs)
  with caplog.at_level(logging.INFO, logger="grlo_jax.data.prompts"):
    prompts = data.encode_prompts(recs, tok, max_prompt_length=limit)
  assert {p.record.index for p in prompts.prompts} == want_kept
  assert prompts.num_read == len(recs) and prompts.num_dropped == len(recs) - len(want_kept)
  assert f"dropped {prompts.num_dropped} longer than {limit} tokens" in caplog.text
  out = batches(prompts, batch_size=4, seed=0, num_epochs=1)
  seen = np.concatenate(indices(out))
  assert set(seen.tolist()) <= want_kept and len(seen) == len(want_kept) // 4 * 4
  assert all(b["input_ids_bp"].shape == (4, limit) for b in out)


def test_deterministic_per_seed_and_reshuffled_per_epoch():
  prompts = tiny_prompts()
  a = indices(batches(prompts, batch_size=16, seed=3, num_epochs=3))
  assert a == indices(batches(prompts, batch_size=16, seed=3, num_epochs=3))
  assert a != indices(batches(prompts, batch_size=16, seed=4, num_epochs=3))
  epochs = [sum(a[4 * e:4 * e + 4], []) for e in range(3)]
  assert len(a) == 12
  for order in epochs:  # each epoch is a permutation of all prompts (64 = 4 x 16, no remainder)
    assert sorted(order) == sorted(p.record.index for p in prompts.prompts)
  assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
  # seed s's second epoch is not seed s + 1's first
  b = indices(batches(prompts, batch_size=16, seed=4, num_epochs=1))
  assert sum(b, []) != epochs[1]


def test_remainder_dropped_each_epoch():
  prompts = tiny_prompts()
  out = indices(batches(prompts, batch_size=12, seed=0, num_epochs=2))
  assert data.steps_per_epoch(prompts, 12) == 5 and len(out) == 10
  first, second = sum(out[:5], []), sum(out[5:], [])
  assert len(set(first)) == len(set(second)) == 60


def test_shards_disjoint_and_cover_the_global_batches():
  prompts = tiny_prompts()
  kwargs = dict(batch_size=12, seed=7, num_epochs=2)
  whole = indices(batches(prompts, **kwargs))
  shards = [indices(batches(prompts, shard_index=i, shard_count=3, **kwargs)) for i in range(3)]
  assert all(len(s) == len(whole) for s in shards)  # every host runs the same number of steps
  for step, global_b in enumerate(whole):
    parts = [s[step] for s in shards]
    assert all(len(p) == 4 for p in parts)
    assert sum(parts, []) == global_b  # disjoint rows that together make the global batch
  epoch = sum(sum((s[:5] for s in shards), []), [])
  assert len(epoch) == len(set(epoch)) == 60


def test_shard_defaults_and_errors():
  prompts = tiny_prompts()
  ds = data.make_prompt_dataset(prompts, batch_size=8, seed=0, num_epochs=1)
  assert len(ds) == 8 and ds[0]["input_ids_bp"].shape == (8, 64)  # one process: the whole batch
  with pytest.raises(ValueError, match="not divisible"):
    data.make_prompt_dataset(prompts, batch_size=8, seed=0, num_epochs=1, shard_index=0, shard_count=3)
  with pytest.raises(ValueError, match="no full batch"):
    data.make_prompt_dataset(prompts, batch_size=128, seed=0, num_epochs=1)


def assert_same_batches(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for k in g:
      np.testing.assert_array_equal(g[k], w[k])


@pytest.mark.parametrize("stop_after", [0, 3, 4, 6])  # 4 steps per epoch: mid-epoch and at the boundary
def test_state_restore_continues_identically(stop_after):
  prompts = tiny_prompts()
  kwargs = dict(batch_size=16, seed=11, num_epochs=2, shard_index=1, shard_count=2)
  want = batches(prompts, **kwargs)
  it = data.make_prompt_iterator(prompts, **kwargs)
  for _ in range(stop_after):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
  next(it)  # the saved state must not move with the live iterator
  resumed = data.make_prompt_iterator(prompts, **kwargs)  # a fresh process rebuilds it
  resumed.set_state(state)
  assert_same_batches(list(resumed), want[stop_after:])


def test_endless_when_num_epochs_is_none():
  prompts = tiny_prompts()
  it = data.make_prompt_iterator(prompts, batch_size=32, seed=0, num_epochs=None, shard_index=0,
                                 shard_count=1)
  got = [next(it)["index_b"].tolist() for _ in range(7)]
  want = indices(batches(prompts, batch_size=32, seed=0, num_epochs=4))[:7]
  assert got == want


def test_real_grlo_prompts_through_qwen3(shared_data):
  tok = data.load_tokenizer(shared_data / "qwen3_tokenizer")
  prompts = data.encode_prompts(data.read_records(shared_data / "grlo_train_prompts.jsonl"), tok,
                                max_prompt_length=128)
  assert prompts.num_read == 1000 and 0 < prompts.num_dropped < 1000
  b = next(data.make_prompt_iterator(prompts, batch_size=64, seed=0, num_epochs=1, shard_index=0,
                                     shard_count=2))
  assert b["input_ids_bp"].shape == (32, 128)
  row = b["attention_mask_bp"][0].astype(bool)
  ids = b["input_ids_bp"][0][row].tolist()
  # "<|im_start|>user\n" ... "<|im_start|>assistant\n"
  assert ids[:3] == [151644, 872, 198] and ids[-3:] == [151644, 77091, 198]
  assert (b["input_ids_bp"][0][~row] == 151643).all()


def test_prompt_length_buckets_pad_each_batch_to_the_smallest_that_holds_it():
  prompts = tiny_prompts()
  longest = max(len(p.ids_p) for p in prompts.prompts)
  buckets = (8, longest + 1, longest + 5, 1000)  # 8 holds no batch; 1000 is past max_prompt_length
  assert longest + 5 < 64
  halves = [batches(prompts, batch_size=8, seed=0, num_epochs=1, prompt_length_buckets=buckets,
                    shard_index=i, shard_count=2) for i in range(2)]
  widths = set()
  for b0, b1 in zip(*halves):
    assert b0["input_ids_bp"].shape[1] == b1["input_ids_bp"].shape[1]  # the same on every host
    width = b0["input_ids_bp"].shape[1]
    got = max(int(b["attention_mask_bp"].sum(1).max()) for b in (b0, b1))
    assert width == data.bucket_width(got, 64, buckets) == min(w for w in buckets if w >= got)
    assert (b0["attention_mask_bp"][:, -1] == 1).all()  # still left-padded
    widths.add(width)
  assert widths == {longest + 1}
  assert data.bucket_width(70, 64, buckets) == 64  # nothing fits: max_prompt_length
