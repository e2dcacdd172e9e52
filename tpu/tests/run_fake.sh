#!/usr/bin/env bash
# Tests for tpu/*.sh without Google Cloud: lints every script (bash -n, shellcheck), then
# drives create/setup/launch/logs/stop/data/sync/delete against a fake gcloud and gsutil
# (tests/fakebin/) whose "TPU workers" are local folders used as $HOME, running a fake
# e2urec_jax. Needs bash, git, rsync, python3 with venv; shellcheck if installed (else the
# lint is skipped with a note, or fails when REQUIRE_SHELLCHECK=1). pip installs the fake
# project (editable), which needs PyPI for its build backend unless one is cached.
#
#   bash tpu/tests/run_fake.sh        # prints PASS at the end, exits non-zero on a failure
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TPU="$(cd "$HERE/.." && pwd)"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
expect() {  # expect PATTERN TEXT
  [[ "$2" == *"$1"* ]] || fail "expected '$1' in:"$'\n'"$2"
}

step "lint"
for f in "$TPU"/*.sh "$TPU"/remote/*.sh "$HERE"/*.sh "$HERE"/fakebin/*; do bash -n "$f"; done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck "$TPU"/*.sh "$TPU"/remote/*.sh "$HERE"/*.sh "$HERE"/fakebin/*
elif [[ "${REQUIRE_SHELLCHECK:-0}" == 1 ]]; then
  fail "shellcheck is not installed (apt-get install -y shellcheck)"
else
  echo "note: shellcheck not installed; lint limited to bash -n"
fi

FAKE_ROOT="$(mktemp -d)"
trap 'for w in "$FAKE_ROOT"/w*; do HOME="$w" STOP_GRACE=2 bash "$TPU/remote/run_worker.sh" stop >/dev/null 2>&1 || true; done; rm -rf "$FAKE_ROOT"' EXIT
export FAKE_ROOT PATH="$HERE/fakebin:$PATH" PROJECT=test-project ZONE=test-zone TPU_NAME=test-tpu FAKE_WORKERS=2

step "a required variable missing"
out="$(env -u PROJECT "$TPU/create.sh" 2>&1)" && fail "create.sh ran without PROJECT"
expect "set PROJECT" "$out"

step "create (twice: the second does nothing)"
expect "creating test-tpu" "$("$TPU/create.sh" 2>&1)"
expect "already exists" "$("$TPU/create.sh" 2>&1)"

step "setup from a git repository"
repo="$FAKE_ROOT/repo"
mkdir -p "$repo/e2urec_jax"
cp "$HERE/fake_e2urec/__main__.py" "$repo/e2urec_jax/__main__.py"
: >"$repo/e2urec_jax/__init__.py"
: >"$repo/requirements.txt"
printf '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "e2urec_jax"\nversion = "0"\n' >"$repo/pyproject.toml"
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=t -c user.email=t@t commit -qm fake
git -C "$repo" branch -M main
for w in 0 1; do python3 -m venv --system-site-packages "$FAKE_ROOT/w$w/e2urec_venv"; done
out="$(REPO_URL="$repo" JAX_SPEC=pip GCSFS_SPEC='' CHECK=0 "$TPU/setup.sh" 2>&1)" || fail "setup.sh: $out"
expect "[worker 1] code: $repo @ main" "$out"
expect "[worker 0] installed:" "$out"

step "launch on 2 workers with SYNC_TO, -e, a ~/ workdir and a flag with a space"
out="$(SYNC_TO=gs://bucket/runs/a SYNC_EVERY=5 "$TPU/launch.sh" -e MYVAR='x y' -e STEPS=3 \
  run --workdir=~/runs/a '--config.note=a b' 2>&1)" || fail "launch: $out"
expect "'--workdir=$FAKE_ROOT/w0/runs/a', '--config.note=a b'] E2UREC_DISTRIBUTED=1 MYVAR=x y start=0" "$out"
expect "finished with exit code 0" "$out"
[[ -d "$FAKE_ROOT/gcs/bucket/runs/a/phases/p/ckpt/2" ]] || fail "the workdir was not mirrored to the bucket"
[[ ! -e "$FAKE_ROOT/gcs/bucket/runs/a/.tmp_save" ]] || fail "a temporary file reached the bucket"
[[ -n "$(ls "$FAKE_ROOT/gcs/bucket/runs/a-logs/")" ]] || fail "worker 0's log was not copied"

step "exit codes reach logs.sh and launch.sh"
out="$("$TPU/launch.sh" -e RC=3 -e STEPS=1 run --workdir=~/runs/b 2>&1)" && fail "launch returned 0 for a failed run"
expect "finished with exit code 3" "$out"
out="$("$TPU/logs.sh" --status 2>&1)" && fail "logs.sh --status returned 0 for a failed run"
expect "[worker 1] finished with exit code 3" "$out"

step "a second launch while one runs is refused; stop ends it"
FOLLOW=0 "$TPU/launch.sh" -e STEPS=100 -e SLEEP=1 run --workdir=~/runs/c >/dev/null
out="$("$TPU/launch.sh" run --workdir=~/runs/c 2>&1)" && fail "a duplicate launch started"
expect "a run is still going" "$out"
out="$(STOP_GRACE=5 "$TPU/stop.sh" 2>&1)"
expect "[worker 1] stopped" "$out"
expect "nothing running" "$("$TPU/stop.sh" 2>&1)"

step "resume: worker 0 lost its disk; the bucket copy comes back, every worker agrees"
rm -rf "$FAKE_ROOT"/w*/runs/a
out="$(SYNC_TO=gs://bucket/runs/a "$TPU/launch.sh" -e STEPS=1 run --workdir=~/runs/a 2>&1)" || fail "resume: $out"
expect "restoring gs://bucket/runs/a" "$out"
expect "start=3" "$out"
expect "start=3" "$(cat "$FAKE_ROOT/w1/e2urec_logs/latest.log")"

step "data.sh: copy once, then skip"
mkdir -p "$FAKE_ROOT/local/ml-1m"
echo "1::1::5::978300760" >"$FAKE_ROOT/local/ml-1m/ratings.dat"
echo "x" >"$FAKE_ROOT/local/ml-1m/with space.dat"
expect "copying" "$(DATA_SRC="$FAKE_ROOT/local/ml-1m" "$TPU/data.sh" 2>&1)"
[[ -f "$FAKE_ROOT/w1/e2urec_data/ml-1m/with space.dat" ]] || fail "data did not arrive on worker 1"
expect "nothing to do" "$(DATA_SRC="$FAKE_ROOT/local/ml-1m" "$TPU/data.sh" 2>&1)"
mkdir -p "$FAKE_ROOT/gcs/bucket/data/gr"
echo "{}" >"$FAKE_ROOT/gcs/bucket/data/gr/books.json"
DATA_SRC=gs://bucket/data/gr "$TPU/data.sh" >/dev/null
[[ -f "$FAKE_ROOT/w1/e2urec_data/gr/books.json" ]] || fail "gs:// data did not arrive on worker 1"

step "sync.sh push and pull"
tilde="~"
WORKDIR="$tilde/runs/b" GCS_DEST=gs://bucket/copy "$TPU/sync.sh" >/dev/null
[[ -f "$FAKE_ROOT/gcs/bucket/copy/results.md" ]] || fail "push did not copy the workdir"
rm -rf "$FAKE_ROOT/w1/runs/b"
WORKDIR="$tilde/runs/b" GCS_DEST=gs://bucket/copy "$TPU/sync.sh" pull >/dev/null
[[ -f "$FAKE_ROOT/w1/runs/b/results.md" ]] || fail "pull did not restore the workdir"

step "SYNC_TO with a gs:// workdir (which the run writes itself) is refused"
out="$(SYNC_TO=gs://bucket/runs/z "$TPU/launch.sh" run --workdir=gs://bucket/runs/z 2>&1)" && fail "SYNC_TO was accepted"
expect "drop SYNC_TO" "$out"

step "delete (twice: the second does nothing)"
YES=1 "$TPU/delete.sh" >/dev/null
expect "nothing to delete" "$("$TPU/delete.sh" 2>&1)"
out="$("$TPU/launch.sh" run --workdir=~/x 2>&1)" && fail "launch ran without a TPU VM"
expect "run tpu/create.sh first" "$out"

echo PASS
