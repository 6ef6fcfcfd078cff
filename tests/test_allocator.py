import subprocess
import sys

import pytest

from grlo_jax import allocator


class Exec(Exception):
  pass


@pytest.fixture
def execve(monkeypatch):
  calls = []

  def fake(path, argv, env):
    calls.append((path, argv, env))
    raise Exec

  monkeypatch.setattr(allocator.os, "execve", fake)
  monkeypatch.delenv(allocator.ENV, raising=False)
  monkeypatch.delenv("LD_PRELOAD", raising=False)
  return calls


def test_restarts_the_same_command_with_tcmalloc_preloaded(execve, monkeypatch):
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
  monkeypatch.setenv("LD_PRELOAD", "libother.so")
  with pytest.raises(Exec):
    allocator.reexec_with_tcmalloc()
  (path, argv, env), = execve
  assert path == sys.executable and argv == list(sys.orig_argv)
  assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so"  # what was preloaded stays


@pytest.mark.parametrize("case", ["opted_out", "already_preloaded", "not_installed"])
def test_leaves_the_process_alone(execve, monkeypatch, case):
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None if case == "not_installed" else "libtcmalloc.so.4")
  if case == "opted_out":
    monkeypatch.setenv(allocator.ENV, "system")
  if case == "already_preloaded":
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
  allocator.reexec_with_tcmalloc()
  assert execve == []
  assert allocator.active() == ("tcmalloc" if case == "already_preloaded" else "system")


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="tcmalloc not installed")
def test_restarted_process_has_tcmalloc_mapped():
  code = ("from grlo_jax import allocator; allocator.reexec_with_tcmalloc(); "
          "print('tcmalloc' in open('/proc/self/maps').read())")
  env = {k: v for k, v in __import__("os").environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
  assert out.stdout.strip() == "True"
