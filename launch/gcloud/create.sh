#!/usr/bin/env bash
# Create a TPU slice: a queued resource (default; waits in the queue until capacity is free) or,
# with --mode=vm, a TPU VM right away. The runtime version follows the type unless given.
USAGE="create.sh --name=NAME --zone=ZONE --type=TYPE [--runtime_version=VERSION] [--spot | --reserved | --best_effort] [--mode=queued|vm] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TYPE=""
RUNTIME_VERSION=""
PROVISIONING=""  # "" (on demand), spot, reserved or best_effort
MODE="queued"
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --type=*) TYPE="${arg#*=}" ;;
    --runtime_version=*) RUNTIME_VERSION="${arg#*=}" ;;
    --spot | --reserved | --best_effort)
      [[ -z "$PROVISIONING" ]] || die "--spot, --reserved and --best_effort exclude each other"
      PROVISIONING="${arg#--}"
      ;;
    --mode=*) MODE="${arg#*=}" ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE" --type "$TYPE"
check_mode "$MODE"
set_scope

# gcloud calls a v5e slice v5litepod-N.
if [[ "$TYPE" == v5e-* ]]; then
  TYPE="v5litepod-${TYPE#v5e-}"
fi
if [[ -z "$RUNTIME_VERSION" ]]; then
  case "$TYPE" in
    v4-*) RUNTIME_VERSION="tpu-ubuntu2204-base" ;;
    v5litepod-*) RUNTIME_VERSION="v2-alpha-tpuv5-lite" ;;
    v5p-*) RUNTIME_VERSION="v2-alpha-tpuv5" ;;
    v6e-*) RUNTIME_VERSION="v2-alpha-tpuv6e" ;;
    *) die "no default runtime version for --type=$TYPE; give --runtime_version=..." ;;
  esac
fi

if [[ "$MODE" == queued ]]; then
  if [[ "$PROVISIONING" == best_effort ]]; then
    cmd=(gcloud alpha compute tpus queued-resources create)  # --best-effort is alpha-only
  else
    cmd=(gcloud compute tpus queued-resources create)
  fi
  # The node gets the resource's name, so that ssh and scp find it by --name as well.
  cmd+=("$NAME" --node-id="$NAME" "${SCOPE[@]}" --accelerator-type="$TYPE"
    --runtime-version="$RUNTIME_VERSION")
else
  [[ "$PROVISIONING" != best_effort ]] || die "--best_effort needs --mode=queued"
  cmd=(gcloud compute tpus tpu-vm create "$NAME" "${SCOPE[@]}" --accelerator-type="$TYPE"
    --version="$RUNTIME_VERSION")
fi
if [[ -n "$PROVISIONING" ]]; then
  cmd+=("--${PROVISIONING//_/-}")
fi
run "${cmd[@]}"
