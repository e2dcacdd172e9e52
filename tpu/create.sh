#!/usr/bin/env bash
# Creates the Cloud TPU VM (single host or pod slice). Does nothing when it exists.
#
#   PROJECT=... ZONE=... TPU_NAME=... tpu/create.sh
#
# Optional:
#   ACCELERATOR_TYPE  v5litepod-8 (default; 8 TPU v5e chips, one host), v6e-8, v4-8, v5litepod-16, ...
#   TPU_VERSION       runtime image (default v2-alpha-tpuv5-lite, the one for v5e; v6e: v2-alpha-tpuv6e;
#                     v4: tpu-ubuntu2204-base). List: gcloud compute tpus versions list --zone=$ZONE
#   SPOT=1            spot capacity: much cheaper, may be preempted at any time (see README)
#   PREEMPTIBLE=1     the older preemptible model (at most 24 h)
#   SCOPES            service account scopes (default cloud-platform, so gsutil on the VM can write
#                     to your bucket; what it may do is then decided by IAM roles)
#   SERVICE_ACCOUNT   service account email (default: the Compute Engine default account)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

state="$(tpu_state)"
if [[ -n "$state" ]]; then
  say "$TPU_NAME already exists in $ZONE (state $state); nothing to do"
  case "$state" in
    PREEMPTED | TERMINATED | STOPPED)
      say "a $state node cannot run jobs: tpu/delete.sh, then tpu/create.sh again" ;;
  esac
  exit 0
fi

extra=()
case "${SPOT:-0}" in 1 | true | yes) extra+=(--spot) ;; esac
case "${PREEMPTIBLE:-0}" in 1 | true | yes) extra+=(--preemptible) ;; esac
[[ -n "${SERVICE_ACCOUNT:-}" ]] && extra+=(--service-account="$SERVICE_ACCOUNT")

say "creating $TPU_NAME (${ACCELERATOR_TYPE:-v5litepod-8}, ${TPU_VERSION:-v2-alpha-tpuv5-lite}) in $ZONE"
gcloud compute tpus tpu-vm create "${TPU_NAME?}" \
  --zone="${ZONE?}" \
  --accelerator-type="${ACCELERATOR_TYPE:-v5litepod-8}" \
  --version="${TPU_VERSION:-v2-alpha-tpuv5-lite}" \
  --project="${PROJECT?}" \
  --scopes="${SCOPES:-https://www.googleapis.com/auth/cloud-platform}" \
  ${extra[@]+"${extra[@]}"}

say "ready: $(tpu_workers) worker(s). Next: tpu/setup.sh"
