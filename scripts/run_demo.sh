#!/usr/bin/env bash
# Sets everything up, then runs the main job on the embedded SmolLM2-135M-Instruct.
# Extra arguments go to the job, e.g. --prompt="Explain KV caches in two sentences."
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python -m helpsteer_jax.chat "$@"
