#!/usr/bin/env bash
# Shows the log of the latest run on one worker and follows it until the run ends.
#
#   tpu/logs.sh [LINES]        worker 0 (WORKER=1 ... for another), last LINES lines (default 50)
#   tpu/logs.sh --status       one line per worker: running, or finished with its exit code
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_ready
if [[ "${1:-}" == --status ]]; then
  tpu_ssh all "$(remote_command run_worker.sh status)"
else
  tpu_ssh "${WORKER:-0}" "$(remote_command run_worker.sh follow "${1:-50}")"
fi
