"""Run untrusted Python in a limited subprocess, one or many at a time.

Each run gets a fresh temporary directory as its cwd, HOME and TMPDIR, and runs
`sandbox_guard.py` (rlimits on CPU time, address space, file size and processes, plus an
audit hook that refuses fork/exec, sockets and writes outside the directory). Where
`unshare -n` works (root, or a kernel that allows it) the child also gets an empty network
namespace, in which even 127.0.0.1 is unreachable. The parent enforces a wall-clock limit and
SIGKILLs the child's whole process group when it ends, whatever the outcome.

A run passes only if the program exits 0 *and* reaches its last line: the sandbox appends a
statement that touches a file with a random name, so `exit(0)` before the tests fails.
"""

import concurrent.futures
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Sequence

_GUARD = pathlib.Path(__file__).with_name("sandbox_guard.py")


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-run limits; the defaults suit HumanEval / MBPP tests on a loaded machine (MBPP 123's
  reference solution takes seconds)."""
  wall_s: float = 30.0
  cpu_s: int = 10
  memory_bytes: int = 1 << 30
  file_bytes: int = 16 << 20      # also caps stdout / stderr, which go to files
  nproc: int = 32                 # enforced for non-root users only
  output_bytes: int = 16 << 10    # kept of each of stdout and stderr
  isolate_network: bool = True    # `unshare -n` when it works here
  python_guards: bool = True      # the audit hook in the child
  site_packages: bool = False     # off: standard library only (`-S`), and 5x faster start-up


@dataclasses.dataclass(frozen=True)
class Result:
  """Outcome of one run. status: passed | failed | timeout | exited_early."""
  status: str
  returncode: int | None
  stdout: str
  stderr: str
  wall_s: float

  @property
  def passed(self) -> bool:
    return self.status == "passed"


_unshare_lock = threading.Lock()
_unshare_ok: list[bool] = []


def network_namespace_available() -> bool:
  """Whether `unshare -n` works on this machine (probed once)."""
  with _unshare_lock:
    if not _unshare_ok:
      path = shutil.which("unshare")
      ok = False
      if path is not None:
        try:
          ok = subprocess.run([path, "-n", "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
          ok = False
      _unshare_ok.append(ok)
    return _unshare_ok[0]


# Waits without reaping: while the leader is a zombie its process group id cannot be reused,
# so the killpg that follows cannot hit an unrelated group.
def _wait_unreaped(pid: int, deadline: float) -> bool:
  delay = 0.001
  while True:
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is not None and info.si_pid == pid:
      return True
    if time.monotonic() >= deadline:
      return False
    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
    delay = min(delay * 2, 0.05)


def _read_head(path: pathlib.Path, n: int) -> str:
  try:
    with open(path, "rb") as f:
      return f.read(n).decode("utf-8", errors="replace")
  except OSError:
    return ""


def run_python(program: str, limits: Limits = Limits()) -> Result:
  """Runs `program` (Python source) in the sandbox and reports how it ended."""
  root = pathlib.Path(tempfile.mkdtemp(prefix="grlo_sandbox_"))
  try:
    marker = f".done_{uuid.uuid4().hex}"
    (root / "program.py").write_text(
        f"{program}\n\nopen({marker!r}, 'w').close()\n", encoding="utf-8")
    flags = ["-I", "-B"] if limits.site_packages else ["-I", "-B", "-S"]
    cmd = [sys.executable, *flags, str(_GUARD), str(root), str(limits.cpu_s),
           str(limits.memory_bytes), str(limits.file_bytes), str(limits.nproc),
           str(root / "program.py"), "1" if limits.python_guards else "0"]
    if limits.isolate_network and network_namespace_available():
      cmd = ["unshare", "-n", "--"] + cmd
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "TMPDIR": str(root), "LANG": "C.UTF-8"}
    start = time.monotonic()
    with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
      proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=err, start_new_session=True, close_fds=True)
    exited = False
    try:
      exited = _wait_unreaped(proc.pid, start + limits.wall_s)
    finally:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      proc.wait()
    wall_s = time.monotonic() - start
    rc = proc.returncode
    if not exited or rc in (-signal.SIGXCPU, -signal.SIGKILL):
      status = "timeout"
    elif rc != 0:
      status = "failed"
    elif not (root / marker).exists():
      status = "exited_early"
    else:
      status = "passed"
    return Result(status, rc, _read_head(root / "stdout", limits.output_bytes),
                  _read_head(root / "stderr", limits.output_bytes), wall_s)
  finally:
    shutil.rmtree(root, ignore_errors=True)


def run_many(programs: Sequence[str], limits: Limits = Limits(),
             max_workers: int = 4) -> list[Result]:
  """Runs each program in its own sandbox, `max_workers` at a time; results in input order."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
    return list(pool.map(lambda p: run_python(p, limits), programs))
