"""The reward-model win-rate proxy for AlpacaEval."""

import pytest

from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import report
from grlo_jax.eval import win_rate


def _items(references):
  return [bm.Item("alpaca_eval", str(i), f"q{i}\n\nResponse:\n",
                  ({"role": "user", "content": f"q{i}"},), ref)
          for i, ref in enumerate(references)]


def test_win_rate_counts_wins_ties_and_losses():
  items = _items(["aaa", "aaa", "aaa", "aaa"])
  seen = []

  def score(prompt, response):
    seen.append(prompt)
    return len(response)

  out = win_rate.win_rate(items, ["aaaa", "aaa", "a", "aaaaa"], score)
  assert out["win_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
  assert 0.5 < out["bt_win_rate"] < 1.0
  assert out["n"] == 4 and out["mean_reference_chars"] == 3
  assert "proxy" in out["proxy"] and "not AlpacaEval 2 LC" in out["proxy"]
  assert set(seen) == {"q0", "q1", "q2", "q3"}  # scored on the instruction, not the base prompt


def test_alpaca_items_load(shared_data):
  items = bm.load("alpaca_eval", shared_data)
  assert len(items) == 805
  assert items[0].messages[0]["content"] and items[0].answer
  assert items[0].tests["reference_generator"] == "gpt4_1106_preview"


def test_markdown_shows_the_proxy_note():
  table = report.markdown_table({"benchmarks": {"alpaca_eval": win_rate.win_rate(
      _items(["x"]), ["yy"], lambda p, r: len(r))}})
  assert "| alpaca_eval |" in table and win_rate.PROXY_NOTE in table
