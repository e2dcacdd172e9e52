#!/usr/bin/env bash
# Runs on each TPU VM worker (tpu/data.sh and tpu/sync.sh ship it): copies folders
# between the worker's disk and Cloud Storage, and keeps the marker that lets
# tpu/data.sh skip a copy that is already there.
#
#   transfer_worker.sh pull SRC DEST          gs://... -> folder on this worker
#   transfer_worker.sh push SRC DEST [delete] folder on this worker -> gs://...
#   transfer_worker.sh mirror-out WORKDIR DEST  push WORKDIR (mirror) if it holds a run
#   transfer_worker.sh data-check DEST HASH   prints E2UREC_DATA_SAME when DEST holds that copy
#   transfer_worker.sh data-begin DEST        empties DEST.part (tpu/data.sh then copies into it)
#   transfer_worker.sh data-commit DEST HASH  DEST.part -> DEST, with the marker
# A leading ~/ in a path means this worker's home.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MARKER=.e2urec_data_sha256
mode="${1:-}"
shift || true
case "$mode" in
  pull)
    [[ $# -eq 2 ]] || die "usage: transfer_worker.sh pull gs://SRC DEST"
    dest="$(expand_tilde "$2")"
    gcs_exists "$1" || die "nothing at $1 (check the path: gsutil ls $1)"
    say "$1 -> $dest"
    gcs_rsync "$1" "$dest"
    say "done ($(du -sh "$dest" | cut -f1))"
    ;;
  push)
    [[ $# -ge 2 ]] || die "usage: transfer_worker.sh push SRC gs://DEST [delete]"
    src="$(expand_tilde "$1")"
    [[ -d "$src" ]] || die "no folder $src on this worker"
    say "$src -> $2${3:+ (mirror: files the workdir lacks are removed there)}"
    gcs_rsync "$src" "$2" "${3:-}"
    say "done"
    ;;
  mirror-out)
    # Before a pod-slice launch: bring the bucket up to date with worker 0's workdir.
    [[ $# -eq 2 ]] || die "usage: transfer_worker.sh mirror-out WORKDIR gs://DEST"
    src="$(expand_tilde "$1")"
    if [[ -e "$src/config.json" ]]; then
      say "$src -> $2 (mirror)"
      gcs_rsync "$src" "$2" delete
    else
      say "no run in $src yet; nothing to mirror"
    fi
    ;;
  data-check)
    dest="$(expand_tilde "$1")"
    if [[ "$(cat "$dest/$MARKER" 2>/dev/null || true)" == "$2" ]]; then echo E2UREC_DATA_SAME; fi
    ;;
  data-begin)
    dest="$(expand_tilde "$1")"
    rm -rf "$dest.part"
    mkdir -p "$(dirname "$dest")"
    ;;
  data-commit)
    dest="$(expand_tilde "$1")"
    [[ -d "$dest.part" ]] || die "$dest.part is missing: the copy did not arrive"
    rm -rf "$dest"
    mv "$dest.part" "$dest"
    echo "$2" >"$dest/$MARKER"
    say "data in $dest ($(du -sh "$dest" | cut -f1))"
    ;;
  *) die "usage: transfer_worker.sh pull|push|mirror-out|data-check|data-begin|data-commit ..." ;;
esac
