"""Child side of the code sandbox: set limits, install an audit hook, then run the program.

Run as a script (`python -I -B sandbox_guard.py ROOT CPU_S MEM FSIZE NPROC PROGRAM`) by
`sandbox.py`; standard library only, since the child does not import grlo_jax. The audit hook
refuses new processes, signals to other processes, sockets, ctypes, changing limits, and any
write, rename, delete or link outside ROOT. It guards against accidents and reward hacking in
model-written code, not against code that sets out to defeat CPython's audit hooks; the OS
limits (rlimits, a network namespace, the parent's kill of the process group) stay in force
either way.
"""

import os
import resource
import sys
import threading

_BLOCKED_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.call_function",
    "resource.setrlimit", "resource.prlimit", "sys.remote_exec",
})
# Modules whose only use here would be to reach fork/exec without an audit event. ctypes may
# load (numpy imports it) but not open libraries, look up symbols or call foreign code.
_BLOCKED_IMPORTS = frozenset({"_posixsubprocess", "_xxsubinterpreters"})
# event -> positions of path arguments that must lie inside ROOT.
_PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "os.link": (0, 1), "os.symlink": (0, 1), "os.chflags": (0,), "os.lchflags": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_ALLOWED_OUTSIDE = frozenset({"/dev/null"})


def _lower_limit(which: int, soft: int, hard: int) -> None:
  # Never above the hard limit already in force: raising one needs privileges.
  _, current_hard = resource.getrlimit(which)
  if current_hard != resource.RLIM_INFINITY:
    soft, hard = min(soft, current_hard), min(hard, current_hard)
  resource.setrlimit(which, (soft, hard))


def _set_limits(cpu_s: int, memory: int, fsize: int, nproc: int) -> None:
  _lower_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
  _lower_limit(resource.RLIMIT_AS, memory, memory)
  _lower_limit(resource.RLIMIT_FSIZE, fsize, fsize)
  _lower_limit(resource.RLIMIT_CORE, 0, 0)
  # Not enforced for root (CAP_SYS_RESOURCE); the audit hook stops fork there.
  _lower_limit(resource.RLIMIT_NPROC, nproc, nproc)


def _make_hook(root: str):
  root = os.path.realpath(root)
  local = threading.local()  # the hook's own calls raise events too: skip those, per thread

  def inside(path) -> bool:
    if isinstance(path, int) or path is None:
      return True
    full = os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))
    return full == root or full.startswith(root + os.sep) or full in _ALLOWED_OUTSIDE

  def is_write(args) -> bool:
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
      return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)

  def hook(event: str, args: tuple) -> None:
    if getattr(local, "busy", False):
      return
    local.busy = True
    try:
      if event in _BLOCKED_EVENTS:
        raise PermissionError(f"sandbox: {event} is not allowed")
      if event == "ctypes.dlopen" and args and args[0] is not None:
        raise PermissionError(f"sandbox: {event} is not allowed")
      if event == "import" and args and args[0] in _BLOCKED_IMPORTS:
        raise PermissionError(f"sandbox: import of {args[0]} is not allowed")
      if event == "open" and args and is_write(args) and not inside(args[0]):
        raise PermissionError(f"sandbox: writing {args[0]!r} outside the sandbox directory")
      if event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
          if i < len(args) and not inside(args[i]):
            raise PermissionError(f"sandbox: {event} on {args[i]!r} outside the sandbox directory")
    finally:
      local.busy = False

  return hook


def main(argv: list[str]) -> None:
  root, cpu_s, memory, fsize, nproc, program, guards = argv[1:8]
  with open(program, encoding="utf-8") as f:
    code = compile(f.read(), program, "exec")
  _set_limits(int(cpu_s), int(memory), int(fsize), int(nproc))
  if guards == "1":
    for name in _BLOCKED_IMPORTS:
      sys.modules.pop(name, None)
    sys.addaudithook(_make_hook(root))
  del sys.argv[:]
  sys.argv.append(program)
  exec(code, {"__name__": "__main__", "__file__": program, "__builtins__": __builtins__})


if __name__ == "__main__":
  main(sys.argv)
