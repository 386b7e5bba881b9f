"""AlpacaEval 2: 805 instructions against gpt4_1106_preview; raw and length-controlled win rate.

Launch:
    python -m helpsteer_jax.evaluate --config=experiments/eval/alpaca_eval.py:tiny
    python -m helpsteer_jax.evaluate --config=experiments/eval/alpaca_eval.py:full,label=base
    # with the instruction-difficulty term estimated from other evaluated models:
    ... --config.alpaca.difficulty_from=outputs/eval/alpaca_eval/full_base,outputs/eval/alpaca_eval/full_feedback_edit
Argument: a variant (tiny | full), then model=, answers=, label=, judge= (see
helpsteer_jax/eval/experiment_args.py).
"""

from helpsteer_jax.eval.experiment_args import build


def get_config(arg=None):
  return build("alpaca_eval", arg).lock()
