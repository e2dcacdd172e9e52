#!/usr/bin/env bash
# Runs on each TPU VM worker (tpu/launch.sh, logs.sh and stop.sh ship it).
#
#   run_worker.sh start COMMAND [FLAGS...]   start `python -m e2urec_jax COMMAND FLAGS...`
#                                            detached from the ssh session, log to a file
#   run_worker.sh follow [LINES]             print the latest log, follow it until the run ends
#   run_worker.sh status                     one line: running or finished (exit code)
#   run_worker.sh stop                       end the run (SIGTERM, then SIGKILL after STOP_GRACE s)
#
# Environment (set by the local scripts):
#   REPO_DIR     the code (default ~/e2urec_jax)        VENV_DIR  the venv (default ~/e2urec_venv)
#   LOG_DIR      logs, pid and exit code (default ~/e2urec_logs)
#   NUM_WORKERS  workers in the slice; > 1 sets E2UREC_DISTRIBUTED=1 (multi-host JAX)
#   SYNC_TO      gs:// folder: pulled into --workdir before the run, pushed from worker 0
#                every SYNC_EVERY seconds (default 600) and at the end (a mirror of the workdir);
#                worker 0's log goes to SYNC_TO-logs/ at the end
#   E2UREC_ENV   extra KEY=VALUE lines exported for the run
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_DIR="$(expand_tilde "${REPO_DIR:-$HOME/e2urec_jax}")"
VENV_DIR="$(expand_tilde "${VENV_DIR:-$HOME/e2urec_venv}")"
LOG_DIR="$(expand_tilde "${LOG_DIR:-$HOME/e2urec_logs}")"
export REPO_DIR VENV_DIR LOG_DIR
export NUM_WORKERS="${NUM_WORKERS:-1}"
export SYNC_TO="${SYNC_TO:-}"
export SYNC_EVERY="${SYNC_EVERY:-600}"
export E2UREC_ENV="${E2UREC_ENV:-}"
PIDFILE="$LOG_DIR/run.pid"

running_pid() {  # prints the pid of the run in progress; false if none
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_start() {
  [[ $# -ge 1 ]] || die "usage: run_worker.sh start COMMAND [--flag=value ...]"
  local pid
  if pid="$(running_pid)"; then
    die "a run is still going here (pid $pid, log $LOG_DIR/latest.log); wait for it, or end it with tpu/stop.sh"
  fi
  [[ -x "$VENV_DIR/bin/python" ]] || die "no venv at $VENV_DIR; run tpu/setup.sh first"
  [[ -d "$REPO_DIR" ]] || die "no code at $REPO_DIR; run tpu/setup.sh first"
  mkdir -p "$LOG_DIR"
  local log
  log="$LOG_DIR/$(date -u +%Y%m%dT%H%M%SZ)-$1.log"
  ln -sfn "$(basename "$log")" "$LOG_DIR/latest.log"
  rm -f "$LOG_DIR/latest.rc"
  # A new session: the run survives the end of this ssh connection, and stop can
  # signal its whole process group.
  setsid nohup bash "${BASH_SOURCE[0]}" job "$@" >"$log" 2>&1 </dev/null &
  echo "$!" >"$PIDFILE"
  say "started (pid $!): python -m e2urec_jax $*"
  say "log: $log"
}

cmd_job() {
  mkdir -p "$LOG_DIR"
  echo "$$" >"$PIDFILE"
  # The exit code for `status`/`follow`, however the job ends (an error before the run too).
  trap 'echo "$?" >"$LOG_DIR/latest.rc"' EXIT
  local wid args=() arg workdir="" expect_workdir=""
  wid="$(worker_id)"
  for arg in "$@"; do
    arg="$(expand_tilde "$arg")"
    args+=("$arg")
    if [[ -n "$expect_workdir" ]]; then workdir="$arg"; expect_workdir=""; fi
    case "$arg" in
      --workdir=*) workdir="${arg#--workdir=}" ;;
      --workdir) expect_workdir=1 ;;
    esac
  done
  echo "# $(date -u +%FT%TZ) host $(hostname) worker $wid of $NUM_WORKERS"
  echo "# code $REPO_DIR ($(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || cat "$REPO_DIR/.e2urec_source" 2>/dev/null || echo '?'))"
  echo "# python -m e2urec_jax ${args[*]}"

  local line
  while IFS= read -r line; do
    [[ -n "$line" ]] && export "${line?}"
  done <<<"$E2UREC_ENV"
  if [[ -z "${E2UREC_DISTRIBUTED:-}" ]]; then
    if ((NUM_WORKERS > 1)); then export E2UREC_DISTRIBUTED=1; else export E2UREC_DISTRIBUTED=0; fi
  fi
  export PYTHONUNBUFFERED=1

  local stopflag="$LOG_DIR/.tmp_sync_stop" syncpid=""
  if [[ -n "$SYNC_TO" ]]; then
    [[ "$SYNC_TO" == gs://* ]] || die "SYNC_TO must be a gs:// folder, not $SYNC_TO"
    [[ -n "$workdir" ]] || die "SYNC_TO needs --workdir=DIR in the command"
    # Worker 0's workdir is the run's state: it is restored from the bucket only when
    # it is gone (a new VM after preemption). Other workers mirror the bucket, which
    # tpu/launch.sh has just brought up to date from worker 0, so every worker starts
    # from the same checkpoints.
    if [[ "$wid" == 0 ]]; then
      if [[ ! -e "$workdir/config.json" ]] && gcs_exists "$SYNC_TO"; then
        say "restoring $SYNC_TO -> $workdir (resume)"
        gcs_rsync "$SYNC_TO" "$workdir"
      fi
    elif gcs_exists "$SYNC_TO"; then
      say "mirroring $SYNC_TO -> $workdir (worker 0's state)"
      gcs_rsync "$SYNC_TO" "$workdir" delete
    fi
    if [[ "$wid" == 0 ]]; then
      rm -f "$stopflag"
      sync_loop "$workdir" "$stopflag" &
      syncpid=$!
    fi
  fi

  cd "$REPO_DIR"
  local rc=0
  "$VENV_DIR/bin/python" -m e2urec_jax "${args[@]}" || rc=$?

  if [[ -n "$syncpid" ]]; then
    touch "$stopflag"
    wait "$syncpid" || true
    say "final sync $workdir -> $SYNC_TO"
    if ! gcs_rsync "$workdir" "$SYNC_TO" delete; then
      say "final sync failed; push it with tpu/sync.sh"
      ((rc != 0)) || rc=1
    fi
  fi
  say "finished with exit code $rc"
  if [[ -n "$syncpid" ]]; then
    gcs_cp "$LOG_DIR/$(readlink "$LOG_DIR/latest.log")" "${SYNC_TO%/}-logs/" || say "could not copy the log to ${SYNC_TO%/}-logs/"
  fi
  return "$rc"
}

sync_loop() {  # sync_loop WORKDIR STOPFLAG: push WORKDIR every SYNC_EVERY s until STOPFLAG exists
  local workdir="$1" stopflag="$2" waited
  while [[ ! -e "$stopflag" ]]; do
    waited=0
    while [[ ! -e "$stopflag" ]] && ((waited < SYNC_EVERY)); do sleep 5; waited=$((waited + 5)); done
    [[ -e "$stopflag" || ! -d "$workdir" ]] && continue
    gcs_rsync "$workdir" "$SYNC_TO" delete || say "sync to $SYNC_TO failed; retrying in ${SYNC_EVERY}s"
  done
}

cmd_follow() {
  local lines="${1:-50}" pid
  [[ -e "$LOG_DIR/latest.log" ]] || die "no run has been started on this worker (no $LOG_DIR/latest.log)"
  if pid="$(running_pid)"; then
    tail -n "$lines" --pid="$pid" -F "$LOG_DIR/latest.log" 2>/dev/null
  else
    tail -n "$lines" "$LOG_DIR/latest.log"
  fi
  cmd_status
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    say "running (pid $pid): $(readlink "$LOG_DIR/latest.log")"
  elif [[ -e "$LOG_DIR/latest.rc" ]]; then
    say "finished with exit code $(cat "$LOG_DIR/latest.rc"): $(readlink "$LOG_DIR/latest.log")"
    return "$(cat "$LOG_DIR/latest.rc")"
  elif [[ -e "$LOG_DIR/latest.log" ]]; then
    say "not running, no exit code (killed or the VM restarted): $(readlink "$LOG_DIR/latest.log")"
    return 1
  else
    say "no run started yet"
  fi
}

cmd_stop() {
  local pid waited=0
  if ! pid="$(running_pid)"; then say "nothing running"; return 0; fi
  say "stopping pid $pid and its process group"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null && ((waited < ${STOP_GRACE:-60})); do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    say "still alive after ${STOP_GRACE:-60}s; SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
  rm -f "$PIDFILE"
  say "stopped; rerunning the same launch resumes from the last checkpoint"
}

mode="${1:-}"
shift || true
case "$mode" in
  start) cmd_start "$@" ;;
  job) cmd_job "$@" ;;
  follow) cmd_follow "$@" ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  *) die "usage: run_worker.sh start COMMAND [FLAGS...] | follow [LINES] | status | stop" ;;
esac
