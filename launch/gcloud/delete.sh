#!/usr/bin/env bash
# Delete the slice (for a queued resource, its node too). gcloud asks before deleting unless --yes.
USAGE="delete.sh --name=NAME --zone=ZONE [--mode=queued|vm] [--yes] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MODE="queued"
YES=0
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --mode=*) MODE="${arg#*=}" ;;
    --yes) YES=1 ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE"
check_mode "$MODE"
set_scope

if [[ "$MODE" == queued ]]; then
  cmd=(gcloud compute tpus queued-resources delete "$NAME" "${SCOPE[@]}" --force)
else
  cmd=(gcloud compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}")
fi
if ((YES)); then
  cmd+=(--quiet)
fi
run "${cmd[@]}"
