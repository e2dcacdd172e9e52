#!/usr/bin/env bash
# Runs one e2urec_jax command on every worker of the TPU VM at once, detached from
# ssh (it survives a dropped connection), with a log file on each worker; then follows
# worker 0's log until the run ends (Ctrl-C stops following, not the run).
#
#   tpu/launch.sh [-e KEY=VALUE]... COMMAND [--flag=value ...]
#   tpu/launch.sh run --config=configs/ml1m.py --workdir=~/runs/ml1m
#
# COMMAND and flags go unchanged to `python -m e2urec_jax` on the workers, run from the
# code folder (so --config=configs/... works); a leading ~/ in a flag value means the
# worker's home. -e KEY=VALUE exports a variable for the run (XLA_FLAGS, HF_HOME, ...).
#
# Optional:
#   SYNC_TO=gs://BUCKET/runs/NAME  restore --workdir from there before the run (if it holds
#                    anything) and mirror the workdir there from worker 0 every SYNC_EVERY
#                    seconds (default 600) and at the end. One SYNC_TO per workdir. Not with
#                    --workdir=gs://... (the run writes to the bucket itself; see tpu/README.md).
#   FOLLOW=0         return right after starting (watch later with tpu/logs.sh)
#   E2UREC_DISTRIBUTED  set here to override: by default 1 on a pod slice (more than one
#                    worker), which makes the code call jax.distributed.initialize(); else 0
# A second launch while a run is going is refused on each worker (no duplicate runs).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { die "usage: tpu/launch.sh [-e KEY=VALUE]... COMMAND [--flag=value ...] (see tpu/README.md)"; }
E2UREC_ENV=""
while [[ $# -gt 0 && "$1" == -e ]]; do
  [[ $# -ge 2 && "$2" == [A-Za-z_]*=* ]] || usage
  E2UREC_ENV+="$2"$'\n'
  shift 2
done
[[ $# -ge 1 ]] || usage
case "$1" in
  prepare | train | retrain | augment | unlearn | evaluate | predict | export | run | bench | forget) ;;
  -*) usage ;;
  *) die "unknown command '$1'; one of: prepare train retrain augment unlearn evaluate predict export run bench forget" ;;
esac
if [[ -n "${E2UREC_DISTRIBUTED:-}" ]]; then E2UREC_ENV+="E2UREC_DISTRIBUTED=$E2UREC_DISTRIBUTED"$'\n'; fi
export E2UREC_ENV

# A value your shell expanded from ~ (e.g. W=~/runs/x; --workdir=$W) names this machine's
# home: give it back as ~/ so that it means the worker's home.
args=()
for arg in "$@"; do
  case "$arg" in --*=*) arg="${arg%%=*}=$(remote_path "${arg#*=}")" ;; esac
  args+=("$arg")
done
set -- "${args[@]}"

workdir=""
for arg in "$@"; do
  if [[ "$arg" == --workdir=* ]]; then workdir="${arg#--workdir=}"; fi
done
if [[ -n "${SYNC_TO:-}" ]]; then
  [[ "$SYNC_TO" == gs://* ]] || die "SYNC_TO must be a gs:// folder, not $SYNC_TO"
  [[ -n "$workdir" ]] || die "SYNC_TO needs --workdir=DIR (with =) in the command"
  # A gs:// workdir is written to the bucket by the run itself (gcsfs); there is nothing to mirror.
  [[ "$workdir" != gs://* ]] || die "SYNC_TO mirrors a workdir on the VM's disk, but --workdir=$workdir is in the bucket already: drop SYNC_TO"
fi

require_ready
NUM_WORKERS="$(tpu_workers)"
export NUM_WORKERS
if [[ -n "${SYNC_TO:-}" && "$NUM_WORKERS" -gt 1 ]]; then
  say "bringing $SYNC_TO up to date with worker 0's workdir (the other workers copy it)"
  tpu_ssh 0 "$(remote_command transfer_worker.sh mirror-out "$workdir" "$SYNC_TO")"
elif [[ -z "${SYNC_TO:-}" && "$NUM_WORKERS" -gt 1 ]]; then
  say "note: on a pod slice, resuming needs SYNC_TO (it gives every worker the same checkpoints)"
fi
say "starting on $NUM_WORKERS worker(s) of $TPU_NAME: $*"
tpu_ssh all "$(remote_command run_worker.sh start "$@")"

case "${FOLLOW:-1}" in
  0 | false | no)
    say "started; follow it with tpu/logs.sh, end it with tpu/stop.sh" ;;
  *)
    say "following worker 0 (Ctrl-C stops following; the run goes on; tpu/logs.sh resumes)"
    tpu_ssh 0 "$(remote_command run_worker.sh follow 20)" ;;
esac
