#!/usr/bin/env bash
# Runs every point of an experiment's sweep (its get_sweep) through one launcher, one after another
# (local.sh) or as one job each (slurm_submit.sh, tpu_pod.sh).
#
#   launch/sweep.sh [--dry-run] LAUNCHER [LAUNCHER OPTIONS] MODULE --config=PATH[:ARG] [FLAGS...]
#   launch/sweep.sh --dry-run local.sh scale --config=experiments/scaling/grid.py:size=smollm2
#   launch/sweep.sh slurm_submit.sh --nodes=2 scale --config=experiments/scaling/grid.py
#   DRY_RUN=1 launch/sweep.sh local.sh scale --config=experiments/scaling/ablations.py:size=smollm2
#
# LAUNCHER is local.sh, slurm_submit.sh or tpu_pod.sh; its options come before MODULE as usual.
# The points come from `python -m helpsteer_jax.sweep --config=PATH[:ARG]`, which builds every
# point's config first. --dry-run (or DRY_RUN=1) prints each point's command and exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 2
fi
launcher="$1"; shift
case "$launcher" in
  local.sh|slurm_submit.sh|tpu_pod.sh) ;;
  *) echo "error: launcher '$launcher' is not one of: local.sh slurm_submit.sh tpu_pod.sh" >&2; exit 2 ;;
esac
# Launcher options (--x) come first, then MODULE; each point's --config goes right after MODULE,
# before any --config.<field> override.
before=(); after=(); sweep=""; module=""
for arg in "$@"; do
  if [[ "$arg" == --config=* && -z "$sweep" ]]; then sweep="${arg#--config=}"
  elif [[ -z "$module" && "$arg" == --* ]]; then before+=("$arg")
  elif [[ -z "$module" ]]; then module="$arg"
  else after+=("$arg"); fi
done
[[ -n "$module" ]] || { echo "error: MODULE missing" >&2; exit 2; }
[[ -n "$sweep" ]] || { echo "error: --config=PATH[:ARG] of a sweep is required" >&2; exit 2; }
helpsteer_check_config "$ROOT" "--config=$sweep"

cd "$ROOT"
points="$("$(helpsteer_default_python "$ROOT")" -m helpsteer_jax.sweep --config="$sweep")"
while IFS= read -r point; do
  [[ -n "$point" ]] || continue
  cmd=(bash "$ROOT/launch/$launcher" "${before[@]}" "$module" "--config=$point" "${after[@]}")
  if [[ "$dry_run" == "1" ]]; then
    DRY_RUN=1 "${cmd[@]}" | tail -n 1
  else
    "${cmd[@]}"
  fi
done <<< "$points"
