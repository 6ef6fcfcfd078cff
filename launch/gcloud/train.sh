#!/usr/bin/env bash
# Start launch/train.py on every worker with the same flags, in the background (nohup), output
# appended to ~/grlo_train.log (logs.sh) and the process id in ~/grlo_train.pid (stop.sh).
# On Cloud TPU, train.py calls jax.distributed.initialize() itself: no coordinator flags.
# --workdir must be shared by all workers (gs://...); a rerun with the same one resumes.
USAGE="train.sh --name=NAME --zone=ZONE --config=configs/grlo.py[:PRESET] --workdir=gs://BUCKET/RUN [--config.KEY=VALUE ...] [--env=VAR=VALUE ...] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG=""
WORKDIR=""
overrides=()
envs=(PYTHONUNBUFFERED=1)  # so that logs.sh shows lines as they are written
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --config=*) CONFIG="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --config.*=*) overrides+=("$arg") ;;
    --env=*=*) envs+=("${arg#--env=}") ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE" --config "$CONFIG" --workdir "$WORKDIR"
set_scope
if [[ "$WORKDIR" != gs://* ]]; then
  echo "$(basename "$0"): note: --workdir=$WORKDIR is not on GCS; every worker must see the same folder" >&2
fi

train=(launch/train.py --config="$CONFIG" --workdir="$WORKDIR")
if ((${#overrides[@]})); then
  train+=("${overrides[@]}")
fi
train_line="$(quote_all "${train[@]}")"
remote="cd ~/$REMOTE_DIR || exit 1; "
remote+="if $RUN_IS_ALIVE; then echo \"\$(hostname): a run is going (pid \$(cat ~/$REMOTE_PID)); stop.sh it first\" >&2; exit 1; fi; "
remote+="echo \"=== \$(date -u +%FT%TZ)\" $train_line >> ~/$REMOTE_LOG; "
remote+="nohup env $(quote_all "${envs[@]}") ~/$REMOTE_VENV/bin/python $train_line >> ~/$REMOTE_LOG 2>&1 < /dev/null & "
remote+="echo \$! > ~/$REMOTE_PID; echo \"\$(hostname): started train.py, pid \$!, log ~/$REMOTE_LOG\""
on_workers all "$remote"
