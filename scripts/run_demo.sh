#!/usr/bin/env bash
# Sets everything up, then runs the main job on the embedded SmolLM2-135M-Instruct: the
# Feedback-Edit inference-time scaling search (self-feedback + self-edit) over Arena-Hard prompts.
# Extra arguments go to the job, e.g. --config.prompts.limit=10 or --config.search.num_drafts=4.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python -m helpsteer_jax.scale --config=experiments/scaling/smollm2_self_feedback_edit.py "$@"
