#!/usr/bin/env bash
# Runs one entry point on this machine (CPU or the local GPUs / TPU chips), as one process or as
# N jax.distributed processes with the coordinator on 127.0.0.1 (a local rehearsal of a cluster
# run: the same command, the same multi-host code paths).
#
#   launch/local.sh [--dry-run] [--processes=N] [--devices_per_process=K] [--port=P] MODULE [FLAGS...]
#   launch/local.sh evaluate --config=experiments/eval/arena_hard.py:tiny
#   launch/local.sh scale --config=experiments/scaling/grid.py:size=smollm2,drafts=2,feedbacks=2
#   launch/local.sh --processes=2 --devices_per_process=4 train --config=experiments/edit_rloo.py:tiny --workdir=runs/rloo2
#   DRY_RUN=1 launch/local.sh train --config=experiments/feedback_sft.py:tiny --workdir=runs/fb_tiny
#
# MODULE is one of train, scale, evaluate, convert, plan, tables, chat; FLAGS go to
# `python -m helpsteer_jax.MODULE` unchanged. The interpreter is $PYTHON, else .venv/bin/python,
# else python3. --processes=N starts N processes, process I with HELPSTEER_COORDINATOR=127.0.0.1:P,
# HELPSTEER_NUM_PROCESSES=N and HELPSTEER_PROCESS_ID=I (read by `distributed.mode=auto`), each
# line of output prefixed with [I]; if one fails the others are stopped and the exit code is the
# failed one's. --devices_per_process=K gives each process K CPU devices (XLA's host platform
# device count) for a rehearsal on a CPU machine. --port: the coordinator's port (default a free
# one). --dry-run (or DRY_RUN=1) prints the command(s) and exits. Needs bash 5.1 or newer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"; processes=1; devices=""; port=""
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --processes=*) processes="${1#*=}" ;;
    --devices_per_process=*) devices="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown option $1 (launcher options come before MODULE)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 1 ]]; then sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 2; fi
[[ "$processes" =~ ^[1-9][0-9]*$ ]] || { echo "error: --processes=$processes; expected a positive count" >&2; exit 2; }
[[ -z "$devices" || "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "error: --devices_per_process=$devices; expected a positive count" >&2; exit 2; }
module="$1"; shift
helpsteer_check_module "$module"
helpsteer_check_config "$ROOT" "$@"

cmd=("$(helpsteer_default_python "$ROOT")" -m "helpsteer_jax.$module" "$@")
if [[ -n "$devices" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices"
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
if [[ "$processes" == "1" ]]; then
  if [[ "$dry_run" == "1" ]]; then
    echo "cd $(helpsteer_quote "$ROOT")"
    helpsteer_print_cmd "${cmd[@]}"
    exit 0
  fi
  cd "$ROOT"
  exec "${cmd[@]}"
fi

if [[ -z "$port" ]]; then
  port="$("${cmd[0]}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
if [[ "$dry_run" == "1" ]]; then
  echo "cd $(helpsteer_quote "$ROOT")"
  for ((i = 0; i < processes; i++)); do
    helpsteer_print_cmd env "HELPSTEER_COORDINATOR=127.0.0.1:$port" "HELPSTEER_NUM_PROCESSES=$processes" \
      "HELPSTEER_PROCESS_ID=$i" "${cmd[@]}"
  done
  exit 0
fi
cd "$ROOT"
pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop_all; exit 130' INT TERM
for ((i = 0; i < processes; i++)); do
  HELPSTEER_COORDINATOR="127.0.0.1:$port" HELPSTEER_NUM_PROCESSES="$processes" HELPSTEER_PROCESS_ID="$i" \
    "${cmd[@]}" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
done
status=0
remaining=("${pids[@]}")
while [[ ${#remaining[@]} -gt 0 ]]; do
  code=0
  wait -n -p finished "${remaining[@]}" || code=$?
  left=()
  for pid in "${remaining[@]}"; do [[ "$pid" == "$finished" ]] || left+=("$pid"); done
  remaining=("${left[@]}")
  if [[ "$code" != "0" && "$status" == "0" ]]; then
    status=$code
    echo "[local] a process exited with code $code; stopping the others" >&2
    stop_all
  fi
done
wait  # the output prefixers
exit "$status"
