"""The code sandbox: hostile programs fail cleanly inside the limits, and a batch goes on."""

import os
import pathlib
import socket
import uuid

import pytest

from grlo_jax.rewards.verifiers import sandbox

FAST = sandbox.Limits(wall_s=6.0, cpu_s=2)


@pytest.fixture
def listener():
  """A TCP port listening on 127.0.0.1 in this (un-sandboxed) process."""
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  s.listen()
  s.settimeout(0.2)
  yield s
  s.close()


def _no_connection_arrived(s: socket.socket) -> bool:
  try:
    s.accept()[0].close()
    return False
  except socket.timeout:
    return True


def _connect(port: int) -> str:
  return ("import socket\n"
          f"s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
          "print('connected')\n")


def test_plain_program_passes_and_runs_in_a_fresh_private_dir():
  r = sandbox.run_python(
      "import os, resource\n"
      "print(os.getcwd()); print(os.environ['HOME']); print(os.environ['TMPDIR'])\n"
      "print(resource.getrlimit(resource.RLIMIT_AS)[0],"
      " resource.getrlimit(resource.RLIMIT_CPU)[0])\n"
      "open('scratch.txt', 'w').write('ok')\n", FAST)
  assert r.passed, r.stderr
  cwd, home, tmp, limits = r.stdout.splitlines()
  assert cwd == home == tmp and pathlib.Path(cwd).name.startswith("grlo_sandbox_")
  assert limits == f"{FAST.memory_bytes} {FAST.cpu_s}"
  assert not pathlib.Path(cwd).exists()  # removed afterwards


def test_infinite_loop_is_stopped_by_the_cpu_limit():
  r = sandbox.run_python("while True:\n  pass\n", FAST)
  assert r.status == "timeout"
  assert r.wall_s < FAST.wall_s + 1.0


def test_sleeping_program_is_stopped_by_the_wall_clock():
  r = sandbox.run_python("import time\ntime.sleep(60)\n", sandbox.Limits(wall_s=1.0, cpu_s=2))
  assert r.status == "timeout"
  assert r.wall_s < 3.0


def test_fork_bomb_fails():
  r = sandbox.run_python("import os\nwhile True:\n  os.fork()\n", FAST)
  assert r.status == "failed"
  assert "os.fork is not allowed" in r.stderr
  assert r.wall_s < FAST.wall_s


@pytest.mark.parametrize("program", [
    "import subprocess\nsubprocess.run(['true'])\n",
    "import os\nos.system('true')\n",
    "import os\nos.execv('/bin/true', ['true'])\n",
    "import ctypes\nctypes.CDLL(None).fork()\n",
    "import ctypes\nctypes.CDLL('libc.so.6')\n",
])
def test_other_ways_to_start_processes_fail(program):
  assert sandbox.run_python(program, FAST).status == "failed"


def test_ten_gigabyte_allocation_fails():
  r = sandbox.run_python("b = bytearray(10 * 1024**3)\nprint(len(b))\n", FAST)
  assert r.status == "failed"
  assert "MemoryError" in r.stderr


def test_network_connection_fails(listener):
  r = sandbox.run_python(_connect(listener.getsockname()[1]), FAST)
  assert r.status == "failed" and "connected" not in r.stdout
  assert _no_connection_arrived(listener)


def test_network_namespace_alone_blocks_loopback(listener):
  if not sandbox.network_namespace_available():
    pytest.skip("unshare -n is not available here")
  limits = sandbox.Limits(wall_s=6.0, cpu_s=2, python_guards=False)
  r = sandbox.run_python(_connect(listener.getsockname()[1]), limits)
  assert r.status == "failed" and "unreachable" in r.stderr
  assert _no_connection_arrived(listener)


def test_audit_hook_alone_blocks_sockets(listener):
  limits = sandbox.Limits(wall_s=6.0, cpu_s=2, isolate_network=False)
  r = sandbox.run_python(
      "import socket\ns = socket.socket()\n"
      f"s.connect(('127.0.0.1', {listener.getsockname()[1]}))\n", limits)
  assert r.status == "failed" and "socket.__new__ is not allowed" in r.stderr
  assert _no_connection_arrived(listener)


@pytest.mark.parametrize("template", [
    "open({path!r}, 'w').write('x')\n",
    "import os\nos.mkdir({path!r})\n",
    "import os\nfd = os.open({path!r}, os.O_CREAT | os.O_WRONLY)\n",
    "import os\nos.symlink('/etc/passwd', 'link')\nopen('link', 'a').write('x')\n",
])
def test_writes_outside_the_sandbox_dir_fail(template, tmp_path):
  path = str(tmp_path / f"escape_{uuid.uuid4().hex}")
  r = sandbox.run_python(template.format(path=path), FAST)
  assert r.status == "failed"
  assert "outside the sandbox directory" in r.stderr
  assert not os.path.exists(path)


def test_exit_before_the_end_does_not_pass():
  r = sandbox.run_python("import sys\nsys.exit(0)\nassert False\n", FAST)
  assert r.status == "exited_early"
  assert sandbox.run_python("import os\nos._exit(0)\n", FAST).status == "exited_early"


def test_output_is_capped():
  limits = sandbox.Limits(wall_s=6.0, cpu_s=2, output_bytes=1000, file_bytes=1 << 20)
  r = sandbox.run_python("import sys\nwhile True:\n  sys.stdout.write('x' * 4096)\n", limits)
  assert r.status == "failed"  # the file-size limit ends it
  assert len(r.stdout) == 1000


def test_batch_carries_on_after_hostile_programs(listener, tmp_path):
  hostile = [
      "while True:\n  pass\n",
      "import os\nwhile True:\n  os.fork()\n",
      "b = bytearray(10 * 1024**3)\n",
      _connect(listener.getsockname()[1]),
      f"open({str(tmp_path / 'escape')!r}, 'w').write('x')\n",
  ]
  good = "def add(a, b):\n  return a + b\n\nassert add(2, 3) == 5\n"
  results = sandbox.run_many(hostile + [good, good], FAST, max_workers=4)
  assert [r.status for r in results] == ["timeout"] + ["failed"] * 4 + ["passed"] * 2
  assert _no_connection_arrived(listener)
  assert not (tmp_path / "escape").exists()
