# shellcheck shell=bash disable=SC2034  # the variables here are read by the sourcing scripts
# Shared by launch/gcloud/*.sh (sourced, not run): flag parsing, quoting, and `run`, which prints
# a command and runs it, or under --dry_run only prints it, one line, exactly as it would run.
#
# Every script takes --name=NAME (the TPU node; for a queued resource also the resource's name),
# --zone=ZONE, optionally --project=PROJECT, and --dry_run. Flags take their value after "=".

set -euo pipefail

# Paths on every worker, relative to the ssh user's home folder.
REMOTE_DIR="grlo_jax"        # the code (sync.sh)
REMOTE_VENV="grlo_venv"      # the Python environment (setup.sh)
REMOTE_LOG="grlo_train.log"  # train.py's stdout and stderr (train.sh, logs.sh)
REMOTE_PID="grlo_train.pid"  # train.py's process id (train.sh, stop.sh)
# Remote shell test: "the train.py that train.sh started on this worker is still running"
# (by its command line, so that an exited run's recycled process id does not count).
# shellcheck disable=SC2016  # expands on the worker, not here
RUN_IS_ALIVE='[ -f ~/'"$REMOTE_PID"' ] && grep -qas launch/train.py "/proc/$(cat ~/'"$REMOTE_PID"')/cmdline"'

NAME=""
ZONE=""
PROJECT=""
DRY_RUN=0

usage() { echo "usage: $USAGE"; }

die() {
  echo "$(basename "$0"): $*" >&2
  usage >&2
  exit 2
}

# unknown_flag ARG: dies with what is wrong with ARG, given the flags USAGE lists.
unknown_flag() {
  local name="${1%%=*}" words word
  [[ "$1" == --* ]] || die "unexpected argument '$1'"
  read -ra words <<<"${USAGE//[][|]/ }"
  for word in "${words[@]}"; do
    if [[ "$1" == "$name" && "$word" == "$name="* ]]; then
      die "flag $name takes a value: $name=..."
    elif [[ "$1" != "$name" && "$word" == "$name" ]]; then
      die "flag $name takes no value"
    fi
  done
  die "unknown flag $name"
}

# parse_common ARG: takes a flag every script has; fails (status 1) for any other argument.
parse_common() {
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) return 1 ;;
  esac
}

# require --flag "$VALUE" [--flag "$VALUE" ...]: dies naming the first flag with an empty value.
require() {
  while (($#)); do
    [[ -n "$2" ]] || die "missing required flag $1=..."
    shift 2
  done
}

check_mode() {
  [[ "$1" == queued || "$1" == vm ]] || die "--mode must be queued or vm, got '$1'"
}

check_uint() {  # check_uint --flag VALUE
  [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"
}

# gcloud flags naming where the TPU is: sets the array SCOPE.
set_scope() {
  SCOPE=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    SCOPE+=(--project="$PROJECT")
  fi
}

# quote WORD: WORD as a shell reads it back, single-quoted only where it has to be
# (for --flag=VALUE only the value, so that it reads --flag='...').
quote() {
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' flag='^--[A-Za-z0-9_.-]+='
  if [[ "$1" =~ $safe ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ $flag ]]; then
    printf '%s' "${BASH_REMATCH[0]}"
    quote "${1#"${BASH_REMATCH[0]}"}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# quote_all WORD...: the words quoted and joined by spaces, one shell command line.
quote_all() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# run CMD...: under --dry_run prints the command line; otherwise prints it to stderr and runs it.
run() {
  if ((DRY_RUN)); then
    quote_all "$@"
    echo
  else
    echo "+ $(quote_all "$@")" >&2
    "$@"
  fi
}

# on_workers WORKER REMOTE_COMMAND: runs a shell command on the TPU workers over ssh.
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker="$1" --command="$2"
}
