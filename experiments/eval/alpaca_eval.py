"""AlpacaEval 2: 805 instructions against gpt4_1106_preview; raw and length-controlled win rate.

Launch:
    python -m helpsteer_jax.evaluate --config=experiments/eval/alpaca_eval.py:tiny
    python -m helpsteer_jax.evaluate --config=experiments/eval/alpaca_eval.py:full,label=base
    # with a local copy of AlpacaEval's instruction-difficulty table (default: from the hub):
    ... --config.alpaca.difficulty_file=data/alpaca_eval/df_gamed.csv
Argument: a variant (tiny | full), then model=, answers=, label=, judge= (see
helpsteer_jax/eval/experiment_args.py).
"""

from helpsteer_jax.eval.experiment_args import build


def get_config(arg=None):
  return build("alpaca_eval", arg).lock()
