# shellcheck shell=bash
# Shared by the tpu/*.sh scripts (sourced, not run). Runs on your own machine:
# bash 3.2 (macOS) or newer, the gcloud CLI, base64.
#
# Required in the environment (each script stops with a message when one is unset):
#   PROJECT    Google Cloud project id          (gcloud projects list)
#   ZONE       zone of the TPU VM               (e.g. us-west4-a; see tpu/README.md)
#   TPU_NAME   name of the TPU VM / pod slice   (e.g. e2urec-v5e)
# Optional:
#   SSH_FLAGS  extra flags for `gcloud compute tpus tpu-vm ssh/scp`, e.g. "--internal-ip"
# Paths on the workers (unset = the defaults of tpu/remote/*.sh, under the worker's $HOME):
#   REPO_DIR (~/e2urec_jax), VENV_DIR (~/e2urec_venv), LOG_DIR (~/e2urec_logs)

# shellcheck disable=SC2034  # REPO_ROOT is used by the scripts that source this file
TPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TPU_DIR/.." && pwd)"

die() { echo "error: $*" >&2; exit 1; }
say() { echo "[$(basename "$0")] $*"; }

PROJECT="${PROJECT?set PROJECT to your Google Cloud project id (gcloud projects list)}"
ZONE="${ZONE?set ZONE to the TPU zone, e.g. export ZONE=us-west4-a (see tpu/README.md)}"
TPU_NAME="${TPU_NAME?set TPU_NAME to a name for the TPU VM, e.g. export TPU_NAME=e2urec-v5e}"
for _var in PROJECT ZONE TPU_NAME; do
  [[ -n "${!_var}" ]] || die "$_var is set but empty"
done
unset _var

command -v gcloud >/dev/null 2>&1 ||
  die "the gcloud CLI is not installed (https://cloud.google.com/sdk/docs/install)"

# gcloud compute tpus tpu-vm VERB ARGS... in this project and zone.
gcloud_tpu() {
  local verb="$1"
  shift
  gcloud compute tpus tpu-vm "$verb" "$@" --zone="$ZONE" --project="$PROJECT"
}

# The node's state (READY, CREATING, PREEMPTED, ...), or nothing when it does not exist.
tpu_state() {
  local out
  if out="$(gcloud_tpu describe "$TPU_NAME" --format='value(state)' 2>&1)"; then
    echo "$out"
  elif [[ "$out" == *NOT_FOUND* || "$out" == *"not found"* || "$out" == *"was not found"* ]]; then
    return 0
  else
    die "gcloud could not describe $TPU_NAME: $out"
  fi
}

require_ready() {
  local state
  state="$(tpu_state)"
  [[ -n "$state" ]] || die "no TPU VM $TPU_NAME in $ZONE/$PROJECT; run tpu/create.sh first"
  [[ "$state" == READY ]] || die "TPU VM $TPU_NAME is $state, not READY (PREEMPTED: tpu/delete.sh, then tpu/create.sh)"
}

# Number of workers (hosts) of the slice: 1 for v5litepod-8, v4-8, v6e-8; more for pod slices.
tpu_workers() {
  local n
  n="$(gcloud_tpu describe "$TPU_NAME" --format='value(networkEndpoints.len())')"
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || n=1
  echo "$n"
}

_ssh_flags() {  # prints SSH_FLAGS one per line
  local flags=() flag
  if [[ -n "${SSH_FLAGS:-}" ]]; then
    read -r -a flags <<<"$SSH_FLAGS"
    for flag in "${flags[@]}"; do echo "$flag"; done
  fi
}

# tpu_ssh WORKER COMMAND: run a shell command on one worker (0, 1, ...) or on all at once.
tpu_ssh() {
  local worker="$1" command="$2" flags=() flag
  while IFS= read -r flag; do flags+=("$flag"); done < <(_ssh_flags)
  gcloud_tpu ssh "$TPU_NAME" --worker="$worker" --command="$command" ${flags[@]+"${flags[@]}"}
}

# tpu_scp WORKER SRC... DEST: copy local files/folders to DEST (a path on the worker).
tpu_scp() {
  local worker="$1" flags=() flag
  shift
  local n=$#
  local dest="${!n}"
  local srcs=("${@:1:n-1}")
  while IFS= read -r flag; do flags+=("$flag"); done < <(_ssh_flags)
  gcloud_tpu scp --recurse "${srcs[@]}" "$TPU_NAME:$dest" --worker="$worker" ${flags[@]+"${flags[@]}"}
}

# remote_path PATH: a path meant for the workers. A local shell turns "VAR=~/x" into
# "$HOME/x" of THIS machine; give that back as "~/x" (the worker's home) instead.
remote_path() {
  local path="$1" tilde='~'
  if [[ "$path" == "$HOME" || "$path" == "$HOME/"* ]]; then
    path="$tilde${path#"$HOME"}"
  fi
  printf '%s' "$path"
}

# quote ARGS...: one string the worker's shell splits back into exactly these words.
quote() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s' "${out% }"
}

# remote_command SCRIPT [ARGS...]: a shell command that writes tpu/remote/lib.sh and
# tpu/remote/SCRIPT into ~/.e2urec_tpu/ on the worker and runs SCRIPT with ARGS. The
# variables named in REMOTE_VARS that are set here are passed along.
REMOTE_VARS="REPO_URL REPO_REF REPO_DIR VENV_DIR LOG_DIR JAX_SPEC GCSFS_SPEC PYTHON SOURCE_DESC CHECK_TIMEOUT NUM_WORKERS SYNC_TO SYNC_EVERY E2UREC_ENV STOP_GRACE"
remote_command() {
  local script="$1" file cmd envs=() var
  shift
  cmd='mkdir -p ~/.e2urec_tpu'
  for file in lib.sh "$script"; do
    [[ -f "$TPU_DIR/remote/$file" ]] || die "missing $TPU_DIR/remote/$file"
    cmd+=" && printf %s $(base64 <"$TPU_DIR/remote/$file" | tr -d '\n') | base64 -d"
    cmd+=" >~/.e2urec_tpu/$file.tmp\$\$ && mv ~/.e2urec_tpu/$file.tmp\$\$ ~/.e2urec_tpu/$file"
  done
  for var in $REMOTE_VARS; do
    if [[ -n "${!var+set}" ]]; then
      case "$var" in
        REPO_DIR | VENV_DIR | LOG_DIR) envs+=("$var=$(remote_path "${!var}")") ;;
        *) envs+=("$var=${!var}") ;;
      esac
    fi
  done
  cmd+=" && env ${envs[*]+$(quote "${envs[@]}")} bash ~/.e2urec_tpu/$script"
  [[ $# -gt 0 ]] && cmd+=" $(quote "$@")"
  printf '%s' "$cmd"
}
