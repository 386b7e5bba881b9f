#!/usr/bin/env bash
# Sets everything up, then runs the default test suite on every core, one test file per worker
# (slow tests: pass -m slow, or -m "" for all; any arguments replace the defaults).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$#" -eq 0 ]; then
  set -- -m "not slow" -n auto --dist loadfile
fi
exec python -m pytest tests "$@"
