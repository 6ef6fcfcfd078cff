"""Worker processes that run a function under a hard time limit; safe to call from any thread.

math-verify's own timeouts use `signal.alarm`, which works only in the main thread. Raising
an exception into a thread instead is not safe either: it can land inside a GC callback or a
finaliser that C code (the AST builder, for one) runs, and CPython 3.11 then reports
"AST constructor recursion depth mismatch" on every later `compile`. And neither can stop a
long call into C (SymPy multiplying out `10^{10^{10}}` in gmpy). So the SymPy work runs in
worker processes: a call that overruns kills its worker, and a fresh one takes its place.
"""

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import queue
import resource
import threading
from typing import Any, Callable, Sequence

_log = logging.getLogger(__name__)
_READY = "ready"
_START_TIMEOUT_S = 120.0  # a worker's imports (SymPy) may take a while on a loaded machine


def _serve(conn: multiprocessing.connection.Connection, modules: Sequence[str],
           memory_bytes: int | None) -> None:
  if memory_bytes is not None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
  for name in modules:
    importlib.import_module(name)
  conn.send(_READY)
  while True:
    try:
      fn, args = conn.recv()
    except (EOFError, OSError):
      return
    try:
      reply = (True, fn(*args))
    except Exception as e:  # reported to the caller, which answers with its default
      reply = (False, f"{type(e).__name__}: {e}"[:500])
    conn.send(reply)


class _Worker:

  def __init__(self, modules: Sequence[str], memory_bytes: int | None):
    ctx = multiprocessing.get_context("spawn")  # the parent may run JAX threads: never fork it
    self.conn, child = ctx.Pipe()
    self.process = ctx.Process(target=_serve, args=(child, tuple(modules), memory_bytes),
                               daemon=True, name="grlo-verifier")
    self.process.start()
    child.close()
    if not self.conn.poll(_START_TIMEOUT_S) or self.conn.recv() != _READY:
      self.kill()
      raise RuntimeError("verifier worker did not start")

  def kill(self) -> None:
    self.process.kill()
    self.process.join(5)
    self.conn.close()


class TimedProcessPool:
  """Up to `size` worker processes, started on first use.

  `modules` are imported by each worker before it counts as started, so their import time
  never eats into a call's time limit. `memory_bytes` caps each worker's address space.
  """

  def __init__(self, size: int, modules: Sequence[str] = (), memory_bytes: int | None = 4 << 30):
    self._modules = tuple(modules)
    self._memory_bytes = memory_bytes
    self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
    for _ in range(size):
      self._idle.put(None)  # a slot whose worker has not started yet
    self._broken = False
    self._lock = threading.Lock()

  def call(self, fn: Callable[..., Any], args: tuple, timeout_s: float, default: Any) -> Any:
    """`fn(*args)` in a worker; `default` if it raises, overruns `timeout_s`, or crashes.

    `fn` must be a module-level function of an importable module (it is pickled by name).
    Where no worker process can be started at all (e.g. inside a daemonic process), runs
    `fn` here without a time limit and logs that once.
    """
    if self._broken:
      return _call_here(fn, args, default)
    worker = self._idle.get()
    try:
      if worker is None:
        try:
          worker = _Worker(self._modules, self._memory_bytes)
        except (AssertionError, OSError, RuntimeError) as e:
          with self._lock:
            if not self._broken:
              _log.warning("no verifier worker process (%s); running without a time limit", e)
            self._broken = True
          return _call_here(fn, args, default)
      try:
        worker.conn.send((fn, args))
        if worker.conn.poll(timeout_s):
          ok, value = worker.conn.recv()
          return value if ok else default
      except (EOFError, OSError):
        pass
      worker.kill()  # overran or died: never reuse it
      worker = None
      return default
    finally:
      self._idle.put(worker)


def _call_here(fn: Callable[..., Any], args: tuple, default: Any) -> Any:
  try:
    return fn(*args)
  except Exception:
    return default
