#!/usr/bin/env bash
# Copies a data folder to every worker of the TPU VM: from this machine (scp) or from
# Cloud Storage (gsutil rsync, run on the workers). Skips a local copy that is already
# there unchanged; a gs:// copy only transfers what differs. Safe to rerun.
#
#   DATA_SRC=~/data/ml-1m tpu/data.sh                 # a local folder
#   DATA_SRC=gs://my-bucket/data/ml-1m tpu/data.sh    # a bucket folder
#
# DATA_DEST: where it goes on the workers (default ~/e2urec_data/<name of DATA_SRC>).
# Then pass --config.data.raw_dir=<DATA_DEST> to the commands. MovieLens needs none of
# this: left empty, raw_dir makes each worker download the release from GroupLens.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA_SRC="${DATA_SRC?set DATA_SRC to a local folder or a gs:// folder with the raw data files}"
[[ -n "$DATA_SRC" ]] || die "DATA_SRC is empty"
DATA_SRC="${DATA_SRC%/}"
tilde='~'
DATA_DEST="$(remote_path "${DATA_DEST:-$tilde/e2urec_data/$(basename "$DATA_SRC")}")"
require_ready
workers="$(tpu_workers)"

if [[ "$DATA_SRC" == gs://* ]]; then
  say "$DATA_SRC -> $DATA_DEST on $workers worker(s)"
  tpu_ssh all "$(remote_command transfer_worker.sh pull "$DATA_SRC" "$DATA_DEST")"
  say "done: pass --config.data.raw_dir=$DATA_DEST"
  exit 0
fi

[[ -d "$DATA_SRC" ]] || die "DATA_SRC=$DATA_SRC is not a folder here (nor a gs:// path)"
if command -v sha256sum >/dev/null 2>&1; then sha=(sha256sum); else sha=(shasum -a 256); fi
hash="$(cd "$DATA_SRC" && find . -type f ! -name .e2urec_data_sha256 -print0 | LC_ALL=C sort -z |
  xargs -0 "${sha[@]}" | "${sha[@]}" | cut -c1-64)"

same="$(tpu_ssh all "$(remote_command transfer_worker.sh data-check "$DATA_DEST" "$hash")" | grep -c E2UREC_DATA_SAME || true)"
if [[ "$same" -ge "$workers" ]]; then
  say "every worker already has this copy in $DATA_DEST; nothing to do"
  exit 0
fi
say "copying $DATA_SRC ($(du -sh "$DATA_SRC" | cut -f1)) to $DATA_DEST on $workers worker(s)"
tpu_ssh all "$(remote_command transfer_worker.sh data-begin "$DATA_DEST")"
part="${DATA_DEST}.part"
# scp takes paths relative to the worker's home folder
if [[ "$part" == "$tilde/"* ]]; then part="${part#"$tilde/"}"; fi
tpu_scp all "$DATA_SRC" "$part"
tpu_ssh all "$(remote_command transfer_worker.sh data-commit "$DATA_DEST" "$hash")"
say "done: pass --config.data.raw_dir=$DATA_DEST"
