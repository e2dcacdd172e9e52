#!/usr/bin/env bash
# Installs e2urec_jax on every worker of the TPU VM: the code (git clone/update, or a
# copy of this checkout), a venv with Python >= 3.11, requirements.txt + jax[tpu], then
# opens the TPU with JAX on all workers at once to check. Safe to rerun (it updates).
#
#   REPO_URL=https://github.com/<you>/e2urec_jax.git tpu/setup.sh   # clone/update on the workers
#   REPO_URL=local tpu/setup.sh                                    # copy this checkout instead
#
# Optional: REPO_REF (branch, tag or commit; default main), JAX_SPEC (default "jax[tpu]";
# pin it, e.g. "jax[tpu]==0.10.2", to keep reruns reproducible), GCSFS_SPEC (default "gcsfs",
# the driver of --workdir=gs://...; empty to skip), PYTHON, REPO_DIR, VENV_DIR, CHECK=0 (skip
# opening the TPU at the end).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPO_URL="${REPO_URL?set REPO_URL to the git URL of e2urec_jax, or REPO_URL=local to copy this checkout}"
[[ -n "$REPO_URL" ]] || die "REPO_URL is empty"
export REPO_URL
require_ready
NUM_WORKERS="$(tpu_workers)"
export NUM_WORKERS
say "$TPU_NAME: $NUM_WORKERS worker(s)"

if [[ "$REPO_URL" == local ]]; then
  command -v git >/dev/null 2>&1 || die "REPO_URL=local needs git here"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # Tracked and untracked-but-not-ignored files as they are now (so uncommitted edits
  # travel too); ignored files (venvs, workdirs, caches) stay here.
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [[ -f "$f" ]]; then printf '%s\0' "$f"; fi; done |
    tar -czf "$tmp/src.tar.gz" --null -T -)
  SOURCE_DESC="local checkout $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  [[ -z "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null)" ]] || SOURCE_DESC+=" + uncommitted changes"
  export SOURCE_DESC
  say "copying $SOURCE_DESC ($(du -h "$tmp/src.tar.gz" | cut -f1)) to every worker"
  tpu_ssh all 'mkdir -p ~/.e2urec_tpu'
  tpu_scp all "$tmp/src.tar.gz" .e2urec_tpu/src.tar.gz
fi

say "installing on every worker (a few minutes the first time)"
tpu_ssh all "$(remote_command setup_worker.sh)"
case "${CHECK:-1}" in
  0 | false | no) say "skipping the TPU check (CHECK=0)" ;;
  *)
    say "checking that JAX sees the TPU on every worker"
    tpu_ssh all "$(remote_command setup_worker.sh check)" ;;
esac
say "done. Next: tpu/launch.sh run --config=configs/demo.py --workdir=~/runs/demo"
