#!/usr/bin/env bash
# Run one command on the workers (default all), in ~/grlo_jax with the venv's python first on
# PATH, in the foreground. The words after -- are quoted one by one; for pipes or redirections
# pass `-- bash -c '...'`. Example: ssh.sh --name=N --zone=Z -- python -c 'import jax; print(jax.device_count())'
USAGE="ssh.sh --name=NAME --zone=ZONE [--worker=all|N] [--project=PROJECT] [--dry_run] -- COMMAND [ARG ...]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER="all"
command_words=()
while (($#)); do
  if [[ "$1" == -- ]]; then
    shift
    command_words=("$@")
    break
  fi
  if ! parse_common "$1"; then
    case "$1" in
      --worker=*) WORKER="${1#*=}" ;;
      *) unknown_flag "$1" ;;
    esac
  fi
  shift
done
require --name "$NAME" --zone "$ZONE"
((${#command_words[@]})) || die "missing the command to run, after --"
[[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be a number or all, got '$WORKER'"
set_scope

on_workers "$WORKER" "cd ~/$REMOTE_DIR && export PATH=\"\$HOME/$REMOTE_VENV/bin:\$PATH\" && $(quote_all "${command_words[@]}")"
