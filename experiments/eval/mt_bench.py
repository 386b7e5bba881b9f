r"""MT-Bench: 80 two-turn questions, single-answer grading 1-10 (references for math, reasoning, coding).

Launch:
    python -m helpsteer_jax.evaluate --config=experiments/eval/mt_bench.py:tiny
    python -m helpsteer_jax.evaluate --config=experiments/eval/mt_bench.py:full,label=base
    # FastChat answers of another model, graded by a local vLLM server:
    python -m helpsteer_jax.evaluate --config=experiments/eval/mt_bench.py:full,answers=answers/model.jsonl \
        --config.judge.base_url=http://localhost:8000/v1 --config.judge.api_key_env=''
Argument: a variant (tiny | full), then model=, answers=, label=, judge= (see
helpsteer_jax/eval/experiment_args.py). Answer temperatures are MT-Bench's per-category ones.
"""

from helpsteer_jax.eval.experiment_args import build


def get_config(arg=None):
  return build("mt_bench", arg).lock()
