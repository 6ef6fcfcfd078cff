"""The thread-safe deadline used around SymPy."""

import concurrent.futures
import time

from grlo_jax.rewards.verifiers import deadline


def _spin():
  while True:
    try:
      sum(range(1000))
    except Exception:  # library code that eats ordinary exceptions must not stop the deadline
      pass


def test_returns_value_in_time():
  assert deadline.call_with_deadline(lambda: 5, 1.0, default=0) == 5
  assert deadline.call_with_deadline(lambda: 5, None, default=0) == 5


def test_stops_runaway_work_in_worker_threads():
  def job(i):
    start = time.monotonic()
    out = deadline.call_with_deadline(_spin if i % 2 else (lambda: i), 0.2, default=-1)
    return out, time.monotonic() - start

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(job, range(8)))
  assert [r for r, _ in results] == [0, -1, 2, -1, 4, -1, 6, -1]
  assert max(t for _, t in results) < 5.0


def test_no_late_exception_after_return():
  for _ in range(50):
    assert deadline.call_with_deadline(lambda: time.sleep(0.001) or 1, 0.001, default=1) == 1
  time.sleep(0.2)  # a stray async exception would surface here
