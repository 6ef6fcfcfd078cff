#!/usr/bin/env bash
# Stop the run train.sh started, on every worker: SIGTERM (train.py saves a checkpoint and exits),
# then wait up to --wait_s seconds for it to exit (0: do not wait). --signal=KILL for a run that hangs.
USAGE="stop.sh --name=NAME --zone=ZONE [--signal=TERM|INT|KILL] [--wait_s=600] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SIGNAL="TERM"
WAIT_S="600"
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --signal=*) SIGNAL="${arg#*=}" ;;
    --wait_s=*) WAIT_S="${arg#*=}" ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE"
[[ "$SIGNAL" == TERM || "$SIGNAL" == INT || "$SIGNAL" == KILL ]] ||
  die "--signal must be TERM, INT or KILL, got '$SIGNAL'"
check_uint --wait_s "$WAIT_S"
set_scope

remote="if ! { $RUN_IS_ALIVE; }; then echo \"\$(hostname): no run going\"; exit 0; fi; "
remote+="pid=\$(cat ~/$REMOTE_PID); kill -$SIGNAL \"\$pid\"; echo \"\$(hostname): sent SIG$SIGNAL to \$pid\""
if ((WAIT_S)); then
  remote+="; for _ in \$(seq $WAIT_S); do $RUN_IS_ALIVE || break; sleep 1; done; "
  remote+="if $RUN_IS_ALIVE; then echo \"\$(hostname): \$pid still running after $WAIT_S s\" >&2; exit 1; fi; "
  remote+="echo \"\$(hostname): \$pid exited\""
fi
on_workers all "$remote"
