#!/usr/bin/env bash
# Runs on each TPU VM worker (tpu/setup.sh ships it): gets the code, makes a venv
# with Python >= 3.11, installs requirements.txt + jax[tpu] + the project (editable).
# Safe to rerun: an existing checkout is updated, an existing venv reused.
#
# Environment (set by tpu/setup.sh):
#   REPO_URL   git URL to clone, or "local" (a tarball was copied to ~/.e2urec_tpu/src.tar.gz)
#   REPO_REF   branch, tag or commit to check out
#   REPO_DIR   where the code goes (default ~/e2urec_jax)
#   VENV_DIR   the virtual environment (default ~/e2urec_venv)
#   JAX_SPEC   the accelerator build of JAX (default "jax[tpu]"; pin it, e.g. "jax[tpu]==0.10.2")
#   PYTHON     an interpreter >= 3.11 to use (default: the newest found, else one installed by uv)
#   SOURCE_DESC  (REPO_URL=local) what the tarball holds, written to REPO_DIR/.e2urec_source
#
# `setup_worker.sh check` instead opens the TPU with JAX and prints what it sees.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${1:-}" != check ]]; then
  REPO_URL="${REPO_URL?REPO_URL is not set (a git URL, or local)}"
fi
REPO_REF="${REPO_REF:-main}"
REPO_DIR="$(expand_tilde "${REPO_DIR:-$HOME/e2urec_jax}")"
VENV_DIR="$(expand_tilde "${VENV_DIR:-$HOME/e2urec_venv}")"
JAX_SPEC="${JAX_SPEC:-jax[tpu]}"
STAGE="$HOME/.e2urec_tpu"

get_code() {
  if [[ "$REPO_URL" == local ]]; then
    [[ -f "$STAGE/src.tar.gz" ]] || die "REPO_URL=local but $STAGE/src.tar.gz was not copied here"
    if [[ -d "$REPO_DIR/.git" ]]; then
      die "$REPO_DIR is a git checkout; REPO_URL=local would replace it (move it away or set REPO_DIR)"
    fi
    rm -rf "$REPO_DIR.new"
    mkdir -p "$REPO_DIR.new"
    tar -xzf "$STAGE/src.tar.gz" -C "$REPO_DIR.new"
    rm -rf "$REPO_DIR"
    echo "${SOURCE_DESC:-local tarball}" >"$REPO_DIR.new/.e2urec_source"
    mv "$REPO_DIR.new" "$REPO_DIR"
    say "code: ${SOURCE_DESC:-local tarball}"
    return
  fi
  command -v git >/dev/null 2>&1 || { sudo apt-get update -qq && sudo apt-get install -y -qq git; }
  if [[ ! -d "$REPO_DIR/.git" ]]; then
    [[ -e "$REPO_DIR" ]] && die "$REPO_DIR exists and is not a git checkout; move it away or set REPO_DIR"
    git clone --quiet "$REPO_URL" "$REPO_DIR"
  fi
  local origin
  origin="$(git -C "$REPO_DIR" remote get-url origin)"
  [[ "$origin" == "$REPO_URL" ]] || die "$REPO_DIR is a clone of $origin, not $REPO_URL; set REPO_DIR to another folder"
  if [[ -n "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no)" ]]; then
    die "$REPO_DIR has local changes; commit or discard them on this worker first (git -C $REPO_DIR status)"
  fi
  git -C "$REPO_DIR" fetch --quiet --tags origin "$REPO_REF"
  git -C "$REPO_DIR" checkout --quiet --detach FETCH_HEAD
  say "code: $REPO_URL @ $REPO_REF ($(git -C "$REPO_DIR" rev-parse --short HEAD))"
}

python_ok() {  # python_ok EXE: true when EXE runs and is Python >= 3.11
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

make_venv() {
  if [[ -x "$VENV_DIR/bin/python" ]] && python_ok "$VENV_DIR/bin/python"; then
    say "venv: reusing $VENV_DIR ($("$VENV_DIR/bin/python" --version))"
    return
  fi
  rm -rf "$VENV_DIR"
  local exe=""
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate" \
        && "$candidate" -m venv --help >/dev/null 2>&1; then
      exe="$candidate"
      break
    fi
  done
  if [[ -n "$exe" ]]; then
    "$exe" -m venv "$VENV_DIR" || {
      # Ubuntu splits venv support (ensurepip) into its own package.
      sudo apt-get update -qq && sudo apt-get install -y -qq "$(basename "$exe")-venv"
      rm -rf "$VENV_DIR"
      "$exe" -m venv "$VENV_DIR"
    }
  else
    # The TPU VM images ship Ubuntu 22.04's Python 3.10; JAX needs 3.11 or newer.
    # uv (from PyPI) fetches a standalone CPython build for the venv.
    say "no Python >= 3.11 here; installing one with uv"
    python3 -m pip install --quiet --user --upgrade uv
    "$HOME/.local/bin/uv" venv --quiet --seed --python 3.12 "$VENV_DIR"
  fi
  say "venv: created $VENV_DIR ($("$VENV_DIR/bin/python" --version))"
}

install() {
  local pip=("$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  # One resolve for all, so pip picks a jax that both requirements.txt and jax[tpu] accept;
  # gcsfs (GCSFS_SPEC, empty to skip) is fsspec's gs:// driver, for --workdir=gs://...
  local extra=()
  [[ -z "${GCSFS_SPEC-gcsfs}" ]] || extra+=("${GCSFS_SPEC-gcsfs}")
  "${pip[@]}" -r "$REPO_DIR/requirements.txt" "$JAX_SPEC" ${extra[@]+"${extra[@]}"}
  "${pip[@]}" --no-deps -e "$REPO_DIR"
  local versions
  versions="$(cd "$HOME" && "$VENV_DIR/bin/python" -c 'import jax, e2urec_jax; print("jax", jax.__version__)')" ||
    die "the install finished but jax or e2urec_jax does not import (see above)"
  say "installed: $versions, e2urec_jax from $REPO_DIR"
}

# check: every worker at once (tpu/setup.sh runs it after all installs are done), since
# on a pod slice the TPU runtime of one host waits for the others.
check() {
  local pidfile pid
  pidfile="$(expand_tilde "${LOG_DIR:-$HOME/e2urec_logs}")/run.pid"
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    say "check skipped: a run is using the TPU (pid $pid)"
    return 0
  fi
  NUM_WORKERS="${NUM_WORKERS:-1}" timeout "${CHECK_TIMEOUT:-300}" "$VENV_DIR/bin/python" -c '
import os, jax
if int(os.environ["NUM_WORKERS"]) > 1:
  jax.distributed.initialize()
d = jax.devices()
print(f"[worker {jax.process_index()}] jax {jax.__version__}: process {jax.process_index()} of {jax.process_count()}, "
      f"{jax.local_device_count()} local of {len(d)} devices ({d[0].device_kind})", flush=True)
' || die "JAX could not open the TPU (see the message above and tpu/README.md, Troubleshooting)"
}

if [[ "${1:-}" == check ]]; then
  check
else
  mkdir -p "$STAGE"
  get_code
  make_venv
  install
fi
