#!/usr/bin/env bash
# Runs one entry point on every worker of a Cloud TPU pod slice (the same command on each host;
# jax.distributed initialises from the TPU environment, `distributed.mode=auto` in the config).
#
#   launch/tpu_pod.sh [--dry-run] --tpu=NAME[,NAME...] --zone=ZONE [--project=ID] [--dir=PATH] [--python=BIN]
#                     [--sync] MODULE [FLAGS...]
#   launch/tpu_pod.sh --tpu=hs-v5p-128 --zone=us-east5-a train --config=experiments/edit_sft.py:70b --workdir=gs://bucket/edit70b
#   DRY_RUN=1 launch/tpu_pod.sh --tpu=hs --zone=us-east5-a evaluate --config=experiments/eval/arena_hard.py:full
#   DRY_RUN=1 launch/tpu_pod.sh --tpu=s0,s1 --zone=us-east5-a scale --config=experiments/scaling/grid.py
#
# --dir: the repository on the workers (default ~/helpsteer_jax); --python: the interpreter there
# (default python3); --sync: first copy this repository to --dir on every worker. TPU_NAME, ZONE and
# PROJECT may be given as environment variables instead. --dry-run (or DRY_RUN=1) prints the
# gcloud commands and exits. MODULE: train, scale, evaluate, convert, plan, tables, chat (scale runs
# one search over all the slice's hosts, process 0 writing). Several slices, --tpu=A,B,...: the
# command runs on each at once; for scale, slice I of N gets --config.prompts.shard=I/N (its share
# of the prompts, into <output_dir>/shard-I-of-N) and python -m helpsteer_jax.merge joins them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"
tpu="${TPU_NAME:-}"; zone="${ZONE:-}"; project="${PROJECT:-}"
remote_dir='~/helpsteer_jax'; remote_python="python3"; sync=0
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --dir=*) remote_dir="${1#*=}" ;;
    --python=*) remote_python="${1#*=}" ;;
    --sync) sync=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown option $1 (launcher options come before MODULE)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 1 ]]; then echo "error: MODULE missing" >&2; exit 2; fi
[[ -n "$tpu" ]] || { echo "error: --tpu=NAME (or TPU_NAME) is required" >&2; exit 2; }
[[ -n "$zone" ]] || { echo "error: --zone=ZONE (or ZONE) is required" >&2; exit 2; }
module="$1"; shift
helpsteer_check_module "$module"
helpsteer_check_config "$ROOT" "$@"

where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")

IFS=',' read -r -a slices <<< "$tpu"
count=${#slices[@]}
if [[ "$count" -gt 1 && "$module" != "scale" ]]; then
  echo "error: several slices (--tpu=$tpu) split the prompts of scale; $module runs on one slice" >&2; exit 2
fi

# The remote command line of slice $1: module flags quoted once for the workers' shell.
remote_command() {
  local line="cd $remote_dir && $remote_python -m helpsteer_jax.$module" arg
  for arg in "${@:2}"; do line+=" $(helpsteer_quote "$arg")"; done
  [[ "$count" -gt 1 ]] && line+=" --config.prompts.shard=$1/$count"
  printf '%s' "$line"
}

pids=()
for index in "${!slices[@]}"; do
  slice="${slices[$index]}"
  sync_cmd=(gcloud compute tpus tpu-vm scp --recurse "$ROOT/." "$slice:$remote_dir" --worker=all "${where[@]}")
  run_cmd=(gcloud compute tpus tpu-vm ssh "$slice" --worker=all "${where[@]}"
           --command="$(remote_command "$index" "$@")")
  if [[ "$dry_run" == "1" ]]; then
    [[ "$sync" == "1" ]] && helpsteer_print_cmd "${sync_cmd[@]}"
    helpsteer_print_cmd "${run_cmd[@]}"
    continue
  fi
  if [[ "$count" -eq 1 ]]; then
    [[ "$sync" == "1" ]] && "${sync_cmd[@]}"
    exec "${run_cmd[@]}"
  fi
  ( [[ "$sync" == "1" ]] && "${sync_cmd[@]}"; "${run_cmd[@]}" ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
