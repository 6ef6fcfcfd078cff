#!/usr/bin/env bash
# Put the code on every worker, in ~/grlo_jax (replacing what was there): by default this
# checkout's working tree (uncommitted changes included, caches and .git left out) as a tarball;
# with --ref, a fresh `git clone` of --repo_url (default: this checkout's origin) at that ref.
USAGE="sync.sh --name=NAME --zone=ZONE [--ref=GIT_REF [--repo_url=URL]] [--project=PROJECT] [--dry_run]"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REF=""
REPO_URL=""
for arg in "$@"; do
  parse_common "$arg" && continue
  case "$arg" in
    --ref=*) REF="${arg#*=}" ;;
    --repo_url=*) REPO_URL="${arg#*=}" ;;
    *) unknown_flag "$arg" ;;
  esac
done
require --name "$NAME" --zone "$ZONE"
set_scope
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Refuse to replace the code under a running train.py.
guard="if $RUN_IS_ALIVE; then echo \"\$(hostname): train.py is running; stop.sh it first\" >&2; exit 1; fi; "
replace="rm -rf ~/$REMOTE_DIR"

if [[ -n "$REF" ]]; then
  if [[ -z "$REPO_URL" ]]; then
    REPO_URL="$(git -C "$REPO_ROOT" remote get-url origin 2>/dev/null)" ||
      die "--ref needs --repo_url=URL (this checkout has no remote 'origin')"
  fi
  on_workers all "$guard$replace && git clone --quiet $(quote "$REPO_URL") ~/$REMOTE_DIR && git -C ~/$REMOTE_DIR checkout --quiet $(quote "$REF")"
else
  [[ -z "$REPO_URL" ]] || die "--repo_url goes with --ref"
  tarball="/tmp/$REMOTE_DIR-$NAME.tar.gz"
  run tar -czf "$tarball" -C "$REPO_ROOT" --exclude-vcs --exclude=__pycache__ --exclude='*.pyc' \
    --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache --exclude=.benchmarks \
    --exclude=./.venv --exclude=./.whl --exclude=./.gl --exclude='./workdir*' .
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:$REMOTE_DIR.tar.gz" "${SCOPE[@]}" --worker=all
  on_workers all "$guard$replace && mkdir ~/$REMOTE_DIR && tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR && rm ~/$REMOTE_DIR.tar.gz"
  run rm -f "$tarball"
fi
