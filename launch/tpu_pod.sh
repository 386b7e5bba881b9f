#!/usr/bin/env bash
# Runs one entry point on every worker of a Cloud TPU pod slice: puts the code on every worker,
# creates its environment there, then starts the same command on all workers at once
# (jax.distributed initialises from the TPU environment, `distributed.mode=auto` in the config).
#
#   launch/tpu_pod.sh [--dry-run] --tpu=NAME[,NAME...] --zone=ZONE [--project=ID] [--code=checkout|REV|none]
#                     [--dir=PATH] [--jax=SPEC] [--python=BIN] MODULE [FLAGS...]
#   launch/tpu_pod.sh --tpu=hs-v5p-128 --zone=us-east5-a train --config=experiments/edit_sft.py:70b --workdir=gs://bucket/edit70b
#   DRY_RUN=1 launch/tpu_pod.sh --tpu=hs --zone=us-east5-a --code=main evaluate --config=experiments/eval/arena_hard.py:full
#   DRY_RUN=1 launch/tpu_pod.sh --tpu=s0,s1 --zone=us-east5-a scale --config=experiments/scaling/grid.py
#
# The code (--code): `checkout` (default) copies this checkout as it is on disk (its tracked files
# and the untracked ones git does not ignore, uncommitted edits included) as a tarball; REV (a tag,
# branch or commit) copies `git archive REV`, that revision exactly; `none` copies nothing and runs
# what --dir already holds. Each worker unpacks it into --dir (default ~/helpsteer_jax; the old
# files go, its .venv stays) and runs scripts/setup_env.sh there with HELPSTEER_PROFILE=cluster and
# --jax (default jax[tpu]), which installs only when the requirements changed. --python: run with
# this interpreter instead (no setup). TPU_NAME, ZONE and PROJECT may be environment variables.
# --dry-run (or DRY_RUN=1) prints each step (pack, copy, set up, run) and exits. MODULE: train,
# scale, evaluate, convert, plan, tables, chat. Several slices, --tpu=A,B,...: each gets the code and
# runs at once; for scale, slice I of N gets --config.prompts.shard=I/N (into
# <output_dir>/shard-I-of-N) and python -m helpsteer_jax.merge joins them. Keep workdirs and outputs
# in a bucket (gs://...): a TPU VM's disk goes with the VM.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.sh"

dry_run="${DRY_RUN:-0}"
tpu="${TPU_NAME:-}"; zone="${ZONE:-}"; project="${PROJECT:-}"
remote_dir='~/helpsteer_jax'; remote_python=""; code="checkout"; jax_spec="jax[tpu]"
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --code=*) code="${1#*=}" ;;
    --dir=*) remote_dir="${1#*=}" ;;
    --jax=*) jax_spec="${1#*=}" ;;
    --python=*) remote_python="${1#*=}" ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}"; exit 0 ;;
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

# The code to copy: a tarball named after what it holds.
tarball=""; pack_line=""
case "$code" in
  none) ;;
  checkout)
    git -C "$ROOT" rev-parse --git-dir > /dev/null 2>&1 || {
      echo "error: --code=checkout needs $ROOT to be a git checkout (or use --code=none)" >&2; exit 2; }
    tarball="${TMPDIR:-/tmp}/helpsteer_jax-checkout-$(git -C "$ROOT" rev-parse --short HEAD).tar.gz"
    pack_line="cd $(helpsteer_quote "$ROOT") && git ls-files -z --cached --others --exclude-standard | xargs -0 sh -c 'for f; do [ -e \"\$f\" ] && printf \"%s\\0\" \"\$f\"; done' _ | tar --null -T - -czf $(helpsteer_quote "$tarball")"
    ;;
  *)
    git -C "$ROOT" rev-parse --verify --quiet "$code^{commit}" > /dev/null || {
      echo "error: --code=$code is not a revision of $ROOT (a tag, branch or commit; or checkout, none)" >&2; exit 2; }
    tarball="${TMPDIR:-/tmp}/helpsteer_jax-$(git -C "$ROOT" rev-parse --short "$code^{commit}").tar.gz"
    pack_line="git -C $(helpsteer_quote "$ROOT") archive --format=tar.gz -o $(helpsteer_quote "$tarball") $(helpsteer_quote "$code")"
    ;;
esac
remote_tarball="/tmp/$(basename "${tarball:-none}")"

# What every worker runs to take the code and set up its environment.
setup_line() {
  local line="mkdir -p $remote_dir && cd $remote_dir"
  line+=" && find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +"
  line+=" && tar -xzf $remote_tarball && rm -f $remote_tarball"
  if [[ -z "$remote_python" ]]; then
    line+=" && HELPSTEER_PROFILE=cluster HELPSTEER_JAX=$(helpsteer_quote "$jax_spec") bash scripts/setup_env.sh"
  fi
  printf '%s' "$line"
}

# The run command of slice $1: module flags quoted once for the workers' shell.
run_line() {
  local python="${remote_python:-.venv/bin/python}"
  local line="cd $remote_dir && $python -m helpsteer_jax.$module" arg
  for arg in "${@:2}"; do line+=" $(helpsteer_quote "$arg")"; done
  [[ "$count" -gt 1 ]] && line+=" --config.prompts.shard=$1/$count"
  printf '%s' "$line"
}

if [[ "$dry_run" == "1" ]]; then
  [[ -n "$tarball" ]] && echo "$pack_line"
else
  [[ -n "$tarball" ]] && bash -c "$pack_line"
fi

deploy_and_run() {  # slice index, slice name, module flags...
  local index="$1" slice="$2"; shift 2
  local copy=(gcloud compute tpus tpu-vm scp "$tarball" "$slice:$remote_tarball" --worker=all "${where[@]}")
  local setup=(gcloud compute tpus tpu-vm ssh "$slice" --worker=all "${where[@]}" --command="$(setup_line)")
  local run=(gcloud compute tpus tpu-vm ssh "$slice" --worker=all "${where[@]}"
             --command="$(run_line "$index" "$@")")
  if [[ "$dry_run" == "1" ]]; then
    if [[ -n "$tarball" ]]; then helpsteer_print_cmd "${copy[@]}"; helpsteer_print_cmd "${setup[@]}"; fi
    helpsteer_print_cmd "${run[@]}"
    return 0
  fi
  if [[ -n "$tarball" ]]; then
    echo "[tpu_pod] $slice: copying the code ($code) to every worker"; "${copy[@]}"
    echo "[tpu_pod] $slice: unpacking into $remote_dir and setting up the environment"; "${setup[@]}"
  fi
  echo "[tpu_pod] $slice: running helpsteer_jax.$module on every worker"
  "${run[@]}"
}

pids=()
for index in "${!slices[@]}"; do
  if [[ "$count" -eq 1 || "$dry_run" == "1" ]]; then
    deploy_and_run "$index" "${slices[$index]}" "$@"
  else
    deploy_and_run "$index" "${slices[$index]}" "$@" &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
