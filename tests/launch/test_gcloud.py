"""launch/gcloud/*.sh: the gcloud commands each script prints under --dry_run, its flag errors,
shellcheck, and the shell snippets it runs on the workers, run here against a scratch home.

Offline and without gcloud: a stand-in `gcloud` first on PATH fails the test if anything calls it.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import tarfile
import time

import pytest

GCLOUD_DIR = pathlib.Path(__file__).resolve().parents[2] / "launch" / "gcloud"
SCRIPTS = sorted(GCLOUD_DIR.glob("*.sh"))
ACTIONS = [p.name for p in SCRIPTS if p.name != "common.sh"]
WHERE = ["--name=grlo-run", "--zone=us-east5-a"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "grlo-run", "--zone=us-east5-a"]


@pytest.fixture
def env(tmp_path):
  """PATH with a `gcloud` that records a call and fails, so a dry run that calls it is caught."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "gcloud"
  fake.write_text(f'#!/bin/sh\ntouch "{tmp_path}/gcloud_called"\nexit 97\n')
  fake.chmod(0o755)
  yield dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  assert not (tmp_path / "gcloud_called").exists(), "a script called gcloud"


def call(env, script, *args):
  return subprocess.run(["bash", str(GCLOUD_DIR / script), *args], env=env, capture_output=True,
                        text=True, timeout=10, check=False)


def dry(env, script, *args) -> list[list[str]]:
  """The commands `script --dry_run` prints, each split into its words as bash would."""
  out = call(env, script, *WHERE, "--dry_run", *args)
  assert out.returncode == 0, out.stderr
  assert out.stderr == ""
  return [shlex.split(line) for line in out.stdout.splitlines()]


def remote(argv: list[str]) -> str:
  """The shell command an ssh line runs on the workers; checks that bash can parse it."""
  (command,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
  subprocess.run(["bash", "-n", "-c", command], check=True)
  return command


# --- create ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, accelerator, runtime", [
    ("v5p-32", "v5p-32", "v2-alpha-tpuv5"),
    ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v4-32", "v4-32", "tpu-ubuntu2204-base"),
    ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
])
def test_create_queued_resource(env, type_, accelerator, runtime):
  assert dry(env, "create.sh", f"--type={type_}") == [[
      "gcloud", "compute", "tpus", "queued-resources", "create", "grlo-run", "--node-id=grlo-run",
      "--zone=us-east5-a", f"--accelerator-type={accelerator}", f"--runtime-version={runtime}"]]


def test_create_provisioning_and_overrides(env):
  (argv,) = dry(env, "create.sh", "--type=v5p-32", "--spot", "--project=my-proj")
  assert argv[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert argv[-3:] == ["--accelerator-type=v5p-32", "--runtime-version=v2-alpha-tpuv5", "--spot"]
  assert "--project=my-proj" in argv
  (argv,) = dry(env, "create.sh", "--type=v5p-32", "--reserved", "--runtime_version=v2-alpha-tpuv5-x")
  assert argv[-2:] == ["--runtime-version=v2-alpha-tpuv5-x", "--reserved"]
  (argv,) = dry(env, "create.sh", "--type=v5e-16", "--best_effort")
  assert argv[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"]
  assert argv[-1] == "--best-effort"


def test_create_single_vm(env):
  assert dry(env, "create.sh", "--type=v5e-16", "--mode=vm", "--spot") == [[
      "gcloud", "compute", "tpus", "tpu-vm", "create", "grlo-run", "--zone=us-east5-a",
      "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot"]]


@pytest.mark.parametrize("args, message", [
    (["--type=v5p-32", "--spot", "--reserved"], "exclude each other"),
    (["--type=v5p-32", "--mode=vm", "--best_effort"], "--best_effort needs --mode=queued"),
    (["--type=v3-8"], "no default runtime version for --type=v3-8"),
    (["--type=v5p-32", "--mode=gke"], "--mode must be queued or vm"),
])
def test_create_rejects(env, args, message):
  out = call(env, "create.sh", *WHERE, *args, "--dry_run")
  assert out.returncode != 0 and message in out.stderr and out.stdout == ""


# --- sync, setup, train, logs, stop ---------------------------------------------------------------

def test_sync_tarball(env):
  tar, scp, ssh, rm = dry(env, "sync.sh")
  tarball = "/tmp/grlo_jax-grlo-run.tar.gz"
  assert tar[:5] == ["tar", "-czf", tarball, "-C", str(GCLOUD_DIR.parents[1])]
  assert "--exclude-vcs" in tar and tar[-1] == "."
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "grlo-run:grlo_jax.tar.gz",
                 "--zone=us-east5-a", "--worker=all"]
  assert ssh[:-1] == SSH + ["--worker=all"]
  assert "tar -xzf ~/grlo_jax.tar.gz -C ~/grlo_jax" in remote(ssh)
  assert rm == ["rm", "-f", tarball]


def test_sync_git_ref(env):
  (ssh,) = dry(env, "sync.sh", "--ref=v1.2", "--repo_url=https://example.com/grlo_jax.git")
  assert ssh[:-1] == SSH + ["--worker=all"]
  assert ("git clone --quiet https://example.com/grlo_jax.git ~/grlo_jax && "
          "git -C ~/grlo_jax checkout --quiet v1.2") in remote(ssh)


def test_setup_installs_requirements_on_every_worker(env):
  (ssh,) = dry(env, "setup.sh", "--project=my-proj")
  assert ssh[:-1] == SSH + ["--project=my-proj", "--worker=all"]
  command = remote(ssh)
  assert "uv venv --seed --python=3.12 ~/grlo_venv" in command
  assert 'cd ~/grlo_jax; ~/grlo_venv/bin/pip install -r requirements.txt "jax[tpu]"' in command


@pytest.mark.parametrize("type_", ["v5p-32", "v5e-16"])
def test_train_runs_the_same_command_on_all_workers(env, type_):
  del type_  # the run command does not depend on the slice: train.py finds the hosts itself
  overrides = ["--config.model.policy_path=gs://b/Qwen3-4B-Base", "--config.mesh.fsdp=-1",
               "--config.data.train_files=gs://b/my prompts.jsonl"]  # a space survives quoting
  (ssh,) = dry(env, "train.sh", "--config=configs/grlo.py:llama_rm", "--workdir=gs://b/run",
               *overrides, "--env=LIBTPU_INIT_ARGS=--xla_a=1 --xla_b=2")
  assert ssh[:-1] == SSH + ["--worker=all"]
  words = shlex.split(remote(ssh))
  start = words.index("nohup")
  end = words.index(">>", start)
  assert words[start:end] == [
      "nohup", "env", "PYTHONUNBUFFERED=1", "LIBTPU_INIT_ARGS=--xla_a=1 --xla_b=2",
      "~/grlo_venv/bin/python", "launch/train.py", "--config=configs/grlo.py:llama_rm",
      "--workdir=gs://b/run", *overrides]
  assert words[end:end + 7] == [">>", "~/grlo_train.log", "2>&1", "<", "/dev/null", "&", "echo"]


def test_logs_and_stop(env):
  (ssh,) = dry(env, "logs.sh")
  assert ssh == SSH + ["--worker=0", "--command=tail -n 100 -F ~/grlo_train.log"]
  (ssh,) = dry(env, "logs.sh", "--worker=all", "--lines=20", "--no_follow")
  assert ssh == SSH + ["--worker=all", "--command=tail -n 20 ~/grlo_train.log"]
  (ssh,) = dry(env, "stop.sh")
  assert ssh[:-1] == SSH + ["--worker=all"]
  assert 'kill -TERM "$pid"' in remote(ssh)


def test_delete_status_and_ssh(env):
  assert dry(env, "delete.sh") == [["gcloud", "compute", "tpus", "queued-resources", "delete",
                                    "grlo-run", "--zone=us-east5-a", "--force"]]
  assert dry(env, "delete.sh", "--mode=vm", "--yes") == [["gcloud", "compute", "tpus", "tpu-vm",
                                                         "delete", "grlo-run", "--zone=us-east5-a",
                                                         "--quiet"]]
  assert dry(env, "status.sh") == [["gcloud", "compute", "tpus", "queued-resources", "describe",
                                    "grlo-run", "--zone=us-east5-a", "--format=value(state.state)"]]
  (ssh,) = dry(env, "ssh.sh", "--worker=0", "--", "python", "-c", "import jax; print(jax.devices())")
  assert ssh[:-1] == SSH + ["--worker=0"]
  assert remote(ssh).endswith("python -c 'import jax; print(jax.devices())'")


@pytest.mark.parametrize("script, args", [
    ("create.sh", ["--type=v5e-16", "--best_effort", "--project=my-proj"]),
    ("train.sh", ["--config=configs/grlo.py", "--workdir=gs://b/run", "--config.x=it's \"quoted\" $HOME",
                  "--env=XLA_FLAGS=--a --b"]),
    ("ssh.sh", ["--", "python", "-c", "print('a b')"]),
])
def test_dry_run_prints_what_runs(env, tmp_path, script, args):
  """Without --dry_run the script hands gcloud exactly the words its dry run printed."""
  line = call(env, script, *WHERE, "--dry_run", *args).stdout
  printed = shlex.split(line)
  recorder = tmp_path / "recorder"
  recorder.mkdir()
  (recorder / "gcloud").write_text(f'#!/bin/sh\nprintf "%s\\0" gcloud "$@" > "{tmp_path}/argv"\n')
  (recorder / "gcloud").chmod(0o755)
  out = call(dict(env, PATH=f"{recorder}{os.pathsep}{env['PATH']}"), script, *WHERE, *args)
  assert out.returncode == 0, out.stderr
  assert (tmp_path / "argv").read_text().split("\0")[:-1] == printed
  assert out.stderr == f"+ {line}"  # and says what it runs


# --- flag errors, usage, shellcheck ---------------------------------------------------------------

@pytest.mark.parametrize("script", ACTIONS)
def test_unknown_and_missing_flags_fail_clearly(env, script):
  out = call(env, script, *WHERE, "--bogus=1", "--dry_run")
  assert out.returncode != 0 and "unknown flag --bogus" in out.stderr and out.stdout == ""
  out = call(env, script, "--name=grlo-run", "--dry_run")
  assert out.returncode != 0 and "missing required flag --zone" in out.stderr and out.stdout == ""
  out = call(env, script, "--help")
  assert out.returncode == 0 and out.stdout.startswith(f"usage: {script} --name=NAME --zone=ZONE")


@pytest.mark.parametrize("script, args, message", [
    ("create.sh", ["--type"], "flag --type takes a value: --type=..."),
    ("create.sh", ["--spot=yes"], "flag --spot takes no value"),
    ("train.sh", ["--workdir=gs://b/r"], "missing required flag --config"),
    ("train.sh", ["--config=configs/grlo.py", "--config.model"], "unknown flag --config.model"),
    ("logs.sh", ["--lines=many"], "--lines must be a whole number"),
    ("stop.sh", ["--signal=HUP"], "--signal must be TERM, INT or KILL"),
    ("sync.sh", ["--repo_url=https://example.com/x.git"], "--repo_url goes with --ref"),
    ("ssh.sh", [], "missing the command to run"),
    ("setup.sh", ["extra"], "unexpected argument 'extra'"),
])
def test_flag_errors(env, script, args, message):
  out = call(env, script, *WHERE, *args, "--dry_run")
  assert out.returncode != 0 and message in out.stderr and out.stdout == ""


def test_scripts_are_strict_and_executable():
  for path in SCRIPTS:
    text = path.read_text()
    if path.name != "common.sh":
      assert text.startswith("#!/usr/bin/env bash\n") and os.access(path, os.X_OK), path
      assert f'USAGE="{path.name} ' in text, path
  assert "set -euo pipefail" in (GCLOUD_DIR / "common.sh").read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not on PATH")
def test_shellcheck_finds_nothing():
  out = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60,
                       check=False)
  assert out.returncode == 0, out.stdout + out.stderr


# --- the worker-side snippets, run here in a scratch home ----------------------------------------

def run_on_worker(home, command):
  return subprocess.run(["bash", "-c", command], env=dict(os.environ, HOME=str(home)),
                        capture_output=True, text=True, timeout=20, check=False)


def wait_for(path, timeout_s=5.0):
  deadline = time.monotonic() + timeout_s
  while not path.exists():
    assert time.monotonic() < deadline, f"{path} did not appear"
    time.sleep(0.02)


@pytest.mark.skipif(not pathlib.Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_worker_side_train_stop_and_sync(env, tmp_path):
  """train.sh starts a stand-in train.py in the background; sync.sh refuses to replace the code
  under it; stop.sh sends SIGTERM and waits for it to exit; then sync.sh unpacks a tarball."""
  home = tmp_path / "home"
  (home / "grlo_jax").mkdir(parents=True)
  python = home / "grlo_venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$HOME/argv"\n'
                    'trap \'echo "got SIGTERM"; exit 0\' TERM\nwhile :; do sleep 0.05; done\n')
  python.chmod(0o755)

  (ssh,) = dry(env, "train.sh", "--config=configs/grlo.py", "--workdir=gs://b/run",
               "--config.data.train_files=gs://b/my prompts.jsonl")
  started = run_on_worker(home, remote(ssh))
  assert started.returncode == 0, started.stderr
  wait_for(home / "argv")
  pid = int((home / "grlo_train.pid").read_text())
  try:
    assert (home / "argv").read_text().splitlines() == [
        "launch/train.py", "--config=configs/grlo.py", "--workdir=gs://b/run",
        "--config.data.train_files=gs://b/my prompts.jsonl"]
    again = run_on_worker(home, remote(ssh))
    assert again.returncode == 1 and "a run is going" in again.stderr

    sync_ssh = dry(env, "sync.sh")[2]
    refused = run_on_worker(home, remote(sync_ssh))
    assert refused.returncode == 1 and "train.py is running" in refused.stderr

    (stop_ssh,) = dry(env, "stop.sh", "--wait_s=10")
    stopped = run_on_worker(home, remote(stop_ssh))
    assert stopped.returncode == 0, stopped.stderr
    assert f"sent SIGTERM to {pid}" in stopped.stdout and f"{pid} exited" in stopped.stdout
    assert "got SIGTERM" in (home / "grlo_train.log").read_text()
    assert "no run going" in run_on_worker(home, remote(stop_ssh)).stdout
  finally:
    if pathlib.Path(f"/proc/{pid}").exists():
      os.kill(pid, 9)

  (tmp_path / "src" / "launch").mkdir(parents=True)
  (tmp_path / "src" / "launch" / "train.py").write_text("# new code\n")
  with tarfile.open(home / "grlo_jax.tar.gz", "w:gz") as tar:  # what scp puts on each worker
    tar.add(tmp_path / "src", arcname=".")
  synced = run_on_worker(home, remote(sync_ssh))
  assert synced.returncode == 0, synced.stderr
  assert (home / "grlo_jax" / "launch" / "train.py").read_text() == "# new code\n"
  assert not (home / "grlo_jax.tar.gz").exists()
