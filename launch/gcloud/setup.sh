#!/usr/bin/env bash
# Install the requirements on every worker: a Python venv (made with uv, which also fetches the
# Python itself: TPU images ship an older one) and `pip install -r requirements.txt 'jax[tpu]'`
# in the synced code folder. Run sync.sh first; safe to run again after each sync.
USAGE="setup.sh --name=NAME --zone=ZONE [--python=3.12] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYTHON="3.12"
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --python=*) PYTHON="${arg#*=}" ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE" --python "$PYTHON"
set_scope

remote="set -e; command -v uv >/dev/null 2>&1 || curl -LsSf https://astral.sh/uv/install.sh | sh; "
remote+="export PATH=\"\$HOME/.local/bin:\$PATH\"; "
remote+="[ -x ~/$REMOTE_VENV/bin/python ] || uv venv --seed --python=$(quote "$PYTHON") ~/$REMOTE_VENV; "
remote+="cd ~/$REMOTE_DIR; ~/$REMOTE_VENV/bin/pip install -r requirements.txt \"jax[tpu]\""
on_workers all "$remote"
