# shellcheck shell=bash
# Helpers for the scripts that run ON a TPU VM worker (tpu/remote/*.sh).
# The local scripts copy this file and the script next to each other into
# ~/.e2urec_tpu/ on every worker before running it, so a worker never needs a
# particular checkout of the repository to be driven.

die() { echo "error [worker $(worker_id)]: $*" >&2; exit 1; }
say() { echo "[worker $(worker_id)] $*"; }

# This VM's index in the slice: 0 on a single-host TPU VM; 0..n-1 on a pod slice.
# E2UREC_WORKER_ID overrides it (tests, or a machine without the metadata server).
worker_id() {
  if [[ -n "${E2UREC_WORKER_ID:-}" ]]; then echo "$E2UREC_WORKER_ID"; return; fi
  local id
  id="$(curl -sf -m 2 -H 'Metadata-Flavor: Google' \
    'http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number' 2>/dev/null || true)"
  if [[ "$id" =~ ^[0-9]+$ ]]; then echo "$id"; return; fi
  id="$(hostname)"
  if [[ "$id" =~ -w-([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}

# "--flag=~/x" -> "--flag=$HOME/x" and "~/x" -> "$HOME/x": the local scripts quote every
# argument, so the worker's shell never expands a tilde, and not every path in the CLI
# goes through os.path.expanduser.
expand_tilde() {
  local arg="$1" tilde='~'
  if [[ "$arg" == "$tilde" || "$arg" == "$tilde/"* ]]; then
    arg="$HOME${arg:1}"
  elif [[ "$arg" == --*=* ]]; then
    local key="${arg%%=*}" value="${arg#*=}"
    if [[ "$value" == "$tilde" || "$value" == "$tilde/"* ]]; then
      arg="$key=$HOME${value:1}"
    fi
  fi
  printf '%s\n' "$arg"
}

# Temporary files of a save in progress (orbax "*.orbax-checkpoint-tmp-*", the
# project's atomic ".tmp_*" files): never copied to or from the bucket.
GCS_EXCLUDE='(^|.*/)\.tmp_.*|.*\.orbax-checkpoint-tmp.*|.*/\.probe.*'

# gcs_rsync SRC DEST [delete]: one-way copy of a folder tree, either side gs://.
# Files already equal at DEST are skipped, so it is safe to repeat. With "delete",
# files at DEST that SRC lacks are removed (a mirror).
gcs_rsync() {
  local src="$1" dest="$2" delete="${3:-}"
  case "$dest" in gs://*) ;; *) mkdir -p "$dest" ;; esac
  if command -v gsutil >/dev/null 2>&1; then
    local flags=(-m -q rsync -r -x "$GCS_EXCLUDE")
    [[ "$delete" == delete ]] && flags+=(-d)
    gsutil "${flags[@]}" "$src" "$dest"
  elif command -v gcloud >/dev/null 2>&1; then
    local flags=(storage rsync --recursive --quiet --exclude="$GCS_EXCLUDE")
    [[ "$delete" == delete ]] && flags+=(--delete-unmatched-destination-objects)
    gcloud "${flags[@]}" "$src" "$dest"
  else
    die "neither gsutil nor gcloud is installed on this worker (both come with the TPU VM images)"
  fi
}

# gcs_cp FILE gs://bucket/folder/: copy one file into a bucket folder.
gcs_cp() {
  if command -v gsutil >/dev/null 2>&1; then
    gsutil -q cp "$1" "$2"
  else
    gcloud storage cp --quiet "$1" "$2"
  fi
}

# gcs_exists gs://bucket/path: true when at least one object lies under that prefix.
gcs_exists() {
  if command -v gsutil >/dev/null 2>&1; then
    [[ -n "$(gsutil ls "${1%/}/" 2>/dev/null | head -n 1)" ]]
  else
    [[ -n "$(gcloud storage ls "${1%/}/" 2>/dev/null | head -n 1)" ]]
  fi
}
