#!/usr/bin/env bash
# Ends the run that tpu/launch.sh started, on every worker (SIGTERM to its process
# group; SIGKILL after STOP_GRACE seconds, default 60). Checkpoints already written
# stay: launching the same command again resumes. Does nothing when no run is going.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_ready
tpu_ssh all "$(remote_command run_worker.sh stop)"
