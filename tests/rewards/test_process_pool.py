"""Worker processes with a hard time limit, called from many threads."""

import concurrent.futures
import operator
import time

from grlo_jax.rewards.verifiers import process_pool


def test_results_errors_and_overruns_from_threads():
  pool = process_pool.TimedProcessPool(2)

  def job(i):
    if i % 4 == 3:  # a long loop inside C: only killing the process stops it
      return pool.call(sum, (range(10**12),), 0.5, "timeout")
    if i % 4 == 2:
      return pool.call(operator.truediv, (1, 0), 5.0, "error")
    return pool.call(operator.add, (i, 1), 30.0, None)

  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(4) as threads:
    got = list(threads.map(job, range(8)))
  assert got == [1, 2, "error", "timeout", 5, 6, "error", "timeout"]
  assert time.monotonic() - start < 60
  assert pool.call(operator.mul, (6, 7), 30.0, None) == 42  # replacements work
