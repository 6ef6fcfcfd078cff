"""Preference records: both layouts, bad records named file:line:key, skipped or refused; batches."""

import json

import numpy as np
import pytest

from grlo_jax import data
from grlo_jax.data import preferences
from grlo_jax.data.records import RecordError


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return data.load_tokenizer("tiny:512", cache_dir=tmp_path_factory.mktemp("tok"))


GOOD = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}
CHAT = {"prompt": "Hi?", "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]}
BAD = [  # (record, key named, problem)
    ({"prompt": "q", "rejected": "b"}, "chosen", "missing"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "rejected", "same as chosen"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "chosen", "empty"),
    ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
    ({"prompt": "q", "chosen": "a", "rejected": [{"role": "user", "content": "q"}]}, "rejected", "assistant"),
    ({"prompt": "q", "chosen": "a" * 400, "rejected": "b"}, "chosen", "tokens > data.max_length=64"),
]


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_layouts_render_the_same_conversation(tok, tmp_path):
  f = _write(tmp_path / "p.jsonl", [GOOD, CHAT, {**CHAT, "chosen": [{"role": "assistant", "content": "Hello!"}]}])
  recs = preferences.read_pairs(f)
  assert recs[0].chosen == ({"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"})
  assert recs[1].chosen == recs[2].chosen  # a whole conversation, or the turns after `prompt`
  text = preferences.render(tok, recs[0].chosen)
  assert text == tok.apply_chat_template([dict(m) for m in recs[0].chosen], tokenize=False)
  assert text.endswith("4<|im_end|>\n")


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_record_is_named_and_refused(tok, tmp_path, i):
  record, key, problem = BAD[i]
  f = _write(tmp_path / "bad.jsonl", [GOOD, record, GOOD])
  with pytest.raises(RecordError) as e:
    preferences.load_pairs(f, tok, max_length=64, skip_bad=False)
  assert f"{f}:2: key {key!r}" in str(e.value) and problem in str(e.value)


def test_bad_records_skipped_with_a_count_nothing_else_lost(tok, tmp_path):
  rows = [GOOD] + [b for b, _, _ in BAD] + ["{not json", CHAT]
  f = _write(tmp_path / "mixed.jsonl", rows)
  out = preferences.load_pairs(f, tok, max_length=64, skip_bad=True)
  assert [p.record.where for p in out.pairs] == [f"{f}:1", f"{f}:{len(rows)}"]
  assert out.num_skipped == len(BAD) + 1 and out.num_read == len(rows)


def test_batches_bucketed_and_right_padded(tok):
  ps = preferences.encode_pairs(preferences.read_pairs("planted:40"), tok, max_length=64)
  it = preferences.make_pair_iterator(ps, batch_size=8, seed=0, num_epochs=1, length_buckets=(32, 48))
  b = next(it)
  assert b["chosen_ids_bt"].shape[1] in (32, 48, 64) and b["chosen_ids_bt"].shape == b["rejected_mask_bt"].shape
  for side in ("chosen", "rejected"):
    m = b[f"{side}_mask_bt"]
    assert (np.diff(m, axis=1) <= 0).all()  # right padding: ones, then zeros
  state = it.get_state()
  nxt = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["chosen_ids_bt"], nxt["chosen_ids_bt"])
  ev = preferences.eval_batches(ps, 16)
  assert len(ev) == 3 and ev[-1]["weight_b"].sum() == 40 - 32
