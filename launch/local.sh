#!/usr/bin/env bash
# Runs one entry point on this machine (CPU or the local GPUs / TPU chips).
#
#   launch/local.sh [--dry-run] MODULE [FLAGS...]
#   launch/local.sh evaluate --config=experiments/eval/arena_hard.py:tiny
#   launch/local.sh scale --config=experiments/scaling/grid.py:size=smollm2,drafts=2,feedbacks=2
#   DRY_RUN=1 launch/local.sh train --config=experiments/feedback_sft.py:tiny --workdir=runs/fb_tiny
#
# MODULE is one of train, scale, evaluate, convert, plan, tables, chat; FLAGS go to
# `python -m helpsteer_jax.MODULE` unchanged. The interpreter is $PYTHON, else .venv/bin/python,
# else python3. --dry-run (or DRY_RUN=1) prints the command and exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 2
fi
module="$1"; shift
helpsteer_check_module "$module"
helpsteer_check_config "$ROOT" "$@"

cmd=("$(helpsteer_default_python "$ROOT")" -m "helpsteer_jax.$module" "$@")
if [[ "$dry_run" == "1" ]]; then
  echo "cd $(helpsteer_quote "$ROOT")"
  helpsteer_print_cmd "${cmd[@]}"
  exit 0
fi
cd "$ROOT"
exec "${cmd[@]}"
