#!/usr/bin/env bash
# Submits launch/slurm_gpu.sbatch with the allocation given here (resources only, no run settings).
#
#   launch/slurm_submit.sh [--dry-run] [--nodes=N] [--gpus-per-node=G] [--per-gpu] [--partition=P]
#                          [--account=A] [--time=HH:MM:SS] [--job-name=NAME] [--shards=N] MODULE [FLAGS...]
#   launch/slurm_submit.sh --nodes=8 train --config=experiments/feedback_sft.py:70b --workdir=runs/fb70b
#   DRY_RUN=1 launch/slurm_submit.sh --per-gpu evaluate --config=experiments/eval/arena_hard.py:full
#   launch/slurm_submit.sh --shards=4 scale --config=experiments/scaling/smollm2_self_feedback_edit.py
#
# Default: one task per node seeing all its G GPUs (G=8). --per-gpu: G tasks per node with one GPU
# each (SLURM sets CUDA_VISIBLE_DEVICES per task). Logs go to logs/<job-name>-<job id>.out.
# --shards=N (scale only): a job array of N independent runs, task I taking the prompt shard I/N
# into <output_dir>/shard-I-of-N (launch/slurm_gpu.sbatch fills --config.prompts.shard from the
# array); `python -m helpsteer_jax.merge --inputs=<output_dir> --output=...` joins them.
# --dry-run (or DRY_RUN=1) prints the sbatch command and exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"
nodes=1; gpus=8; per_gpu=0; extra=(); name="helpsteer"; shards=0
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --nodes=*) nodes="${1#*=}" ;;
    --gpus-per-node=*) gpus="${1#*=}" ;;
    --per-gpu) per_gpu=1 ;;
    --partition=*|--account=*|--time=*) extra+=("$1") ;;
    --job-name=*) name="${1#*=}" ;;
    --shards=*) shards="${1#*=}" ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown option $1 (launcher options come before MODULE)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 1 ]]; then echo "error: MODULE missing" >&2; exit 2; fi
module="$1"; shift
helpsteer_check_module "$module"
helpsteer_check_config "$ROOT" "$@"
if [[ "$shards" != "0" ]]; then
  if ! [[ "$shards" =~ ^[1-9][0-9]*$ ]]; then echo "error: --shards=$shards; expected a positive count" >&2; exit 2; fi
  if [[ "$module" != "scale" ]]; then echo "error: --shards splits the prompts of scale, not $module" >&2; exit 2; fi
  extra+=(--array="0-$((shards - 1))")
fi

if [[ "$per_gpu" == "1" ]]; then
  tasks=(--ntasks-per-node="$gpus" --gpus-per-task=1)
else
  tasks=(--ntasks-per-node=1)
fi
cmd=(sbatch --job-name="$name-$module" --nodes="$nodes" --gpus-per-node="$gpus" "${tasks[@]}"
     "${extra[@]}" --output="logs/%x-%j.out" "$ROOT/launch/slurm_gpu.sbatch" "$module" "$@")
if [[ "$dry_run" == "1" ]]; then
  echo "cd $(helpsteer_quote "$ROOT")"
  helpsteer_print_cmd "${cmd[@]}"
  exit 0
fi
cd "$ROOT"
mkdir -p logs
exec "${cmd[@]}"
