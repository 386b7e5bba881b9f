r"""Arena-Hard v0.1: 500 questions, pairwise judge against gpt-4-0314 in both orders.

Launch:
    python -m helpsteer_jax.evaluate --config=experiments/eval/arena_hard.py:tiny
    # the paper setup: the 70B policy's greedy answers, GPT-4-Turbo as judge (OPENAI_API_KEY)
    python -m helpsteer_jax.evaluate --config=experiments/eval/arena_hard.py:full,label=llama3.3_instruct:greedy
    # a Feedback-Edit scaling run's chosen answers, as the table row its config names
    python -m helpsteer_jax.evaluate \
        --config=experiments/eval/arena_hard.py:full,answers=outputs/scaling/ablation_70b_nemotron_instruct_main_arena_hard_feedback_edit
    # style control, or another judge endpoint:
    ... --config.scoring.style_control=True --config.judge.base_url=http://localhost:8000/v1
Argument: a variant (tiny | full), then model=, answers=, label=, judge= (see
helpsteer_jax/eval/experiment_args.py).
"""

from helpsteer_jax.eval.experiment_args import build


def get_config(arg=None):
  return build("arena_hard", arg).lock()
