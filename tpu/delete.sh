#!/usr/bin/env bash
# Deletes the TPU VM. Its disks go with it: push the workdir to a bucket first
# (tpu/sync.sh). Does nothing when the node does not exist. YES=1 skips the prompt.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

state="$(tpu_state)"
if [[ -z "$state" ]]; then
  say "no TPU VM $TPU_NAME in $ZONE; nothing to delete"
  exit 0
fi
say "deleting $TPU_NAME ($state): files on its disks (a local workdir, logs) are lost"
flags=()
case "${YES:-0}" in 1 | true | yes) flags+=(--quiet) ;; esac
gcloud_tpu delete "$TPU_NAME" ${flags[@]+"${flags[@]}"}
say "deleted"
