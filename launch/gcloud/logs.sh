#!/usr/bin/env bash
# Follow train.py's log (~/grlo_train.log) on one worker (default 0, which prints the metrics)
# or on all of them (lines interleave). Ctrl-C stops following; the run goes on.
USAGE="logs.sh --name=NAME --zone=ZONE [--worker=0|N|all] [--lines=100] [--no_follow] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER="0"
LINES="100"
FOLLOW=1
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --worker=*) WORKER="${arg#*=}" ;;
    --lines=*) LINES="${arg#*=}" ;;
    --no_follow) FOLLOW=0 ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE"
check_uint --lines "$LINES"
[[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be a number or all, got '$WORKER'"
set_scope

if ((FOLLOW)); then
  on_workers "$WORKER" "tail -n $LINES -F ~/$REMOTE_LOG"
else
  on_workers "$WORKER" "tail -n $LINES ~/$REMOTE_LOG"
fi
