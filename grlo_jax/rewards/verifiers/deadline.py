"""A time limit for pure-Python work that is safe in any thread.

math-verify's own timeouts use `signal.alarm`, which only works in the main thread and
replaces the host's SIGALRM handler. Here a watchdog timer instead raises an exception
asynchronously in the calling thread (`PyThreadState_SetAsyncExc`). The exception lands
at the next bytecode boundary, so it interrupts SymPy (pure Python) but not one long call
into C; that call finishes first.
"""

import ctypes
import threading
from typing import Callable, TypeVar

T = TypeVar("T")

# Re-sent at this interval in case library code swallows the first one in a bare except.
_RESEND_S = 0.05


class DeadlineExceeded(BaseException):
  """Raised in the worker thread; a BaseException so `except Exception` cannot eat it."""


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
  ctypes.pythonapi.PyThreadState_SetAsyncExc(
      ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


def call_with_deadline(fn: Callable[[], T], seconds: float | None, default: T) -> T:
  """Returns `fn()`, or `default` if it runs longer than `seconds` (None: no limit)."""
  if seconds is None:
    return fn()
  thread_id = threading.get_ident()
  lock = threading.Lock()
  state = {"done": False}
  timer_box: list[threading.Timer] = []

  def fire() -> None:
    with lock:
      if state["done"]:
        return
      _set_async_exc(thread_id, DeadlineExceeded)
      timer = threading.Timer(_RESEND_S, fire)
      timer.daemon = True
      timer_box[:] = [timer]
      timer.start()

  timer = threading.Timer(seconds, fire)
  timer.daemon = True
  timer_box.append(timer)
  timer.start()
  result: list[T] = []
  try:
    result.append(fn())
  except DeadlineExceeded:
    pass
  while True:  # an exception may land while we stand the watchdog down: repeat until clean
    try:
      with lock:
        state["done"] = True
        timer_box[0].cancel()
        # Drop an exception that was sent but has not landed yet; once `done` is set no
        # new one can be sent.
        _set_async_exc(thread_id, None)
      break
    except DeadlineExceeded:
      continue
  return result[0] if result else default
