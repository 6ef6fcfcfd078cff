#!/usr/bin/env bash
# Print the slice's state: for a queued resource WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, ...
# (ssh works once ACTIVE); for a TPU VM CREATING, READY, ...
USAGE="status.sh --name=NAME --zone=ZONE [--mode=queued|vm] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MODE="queued"
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --mode=*) MODE="${arg#*=}" ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE"
check_mode "$MODE"
set_scope

if [[ "$MODE" == queued ]]; then
  run gcloud compute tpus queued-resources describe "$NAME" "${SCOPE[@]}" --format='value(state.state)'
else
  run gcloud compute tpus tpu-vm describe "$NAME" "${SCOPE[@]}" --format='value(state)'
fi
