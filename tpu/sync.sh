#!/usr/bin/env bash
# Copies a workdir between the TPU VM and Cloud Storage (gsutil -m rsync -r).
#
#   WORKDIR=~/runs/ml1m GCS_DEST=gs://my-bucket/runs/ml1m tpu/sync.sh [push]   worker 0 -> bucket
#   WORKDIR=~/runs/ml1m GCS_DEST=gs://my-bucket/runs/ml1m tpu/sync.sh pull     bucket -> every worker
#
# push copies what is new or changed and keeps files the workdir no longer has (old
# checkpoints); DELETE=1 makes the bucket an exact mirror. Temporary files of a save in
# progress are never copied. tpu/launch.sh with SYNC_TO does the same on its own.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKDIR="${WORKDIR?set WORKDIR to the workdir on the TPU VM, as given to --workdir (e.g. ~/runs/ml1m)}"
GCS_DEST="${GCS_DEST?set GCS_DEST to a gs:// folder, e.g. gs://my-bucket/runs/ml1m}"
[[ "$GCS_DEST" == gs://* ]] || die "GCS_DEST must start with gs://, not $GCS_DEST"
[[ -n "$WORKDIR" ]] || die "WORKDIR is empty"
WORKDIR="$(remote_path "$WORKDIR")"
require_ready

case "${1:-push}" in
  push)
    delete=""
    case "${DELETE:-0}" in 1 | true | yes) delete=delete ;; esac
    tpu_ssh 0 "$(remote_command transfer_worker.sh push "$WORKDIR" "$GCS_DEST" $delete)"
    ;;
  pull)
    tpu_ssh all "$(remote_command transfer_worker.sh pull "$GCS_DEST" "$WORKDIR")"
    ;;
  *) die "usage: tpu/sync.sh [push|pull]" ;;
esac
