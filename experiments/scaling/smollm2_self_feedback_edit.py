"""Self-feedback + self-edit on the embedded SmolLM2-135M-Instruct: the README's main job.

The policy plays every role (drafts, feedback, edits, and the generative judge that selects).
Launch:
    python -m helpsteer_jax.scale --config=experiments/scaling/smollm2_self_feedback_edit.py
    python -m helpsteer_jax.scale --config=experiments/scaling/smollm2_self_feedback_edit.py:mt_bench \
        --config.prompts.limit=10
Argument: prompt set, `arena_hard` (default), `mt_bench` or `alpaca_eval` (also as `prompts=alpaca_eval`);
the records carry the ids `python -m helpsteer_jax.evaluate` matches answers by.
"""

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.scaling.config import default_config


def get_config(arg=None):
  config = default_config()
  config.prompts.source = parse_arg(arg, positional="prompts", prompts="arena_hard")["prompts"]
  config.prompts.limit = 3
  config.search.num_drafts = 2
  # 2 feedbacks sampled per draft and every effective one kept (the default samples 2M): a short
  # CPU run.
  config.search.num_feedbacks = 2
  config.search.num_feedback_samples = 2
  config.search.num_edits = 1
  config.search.draft.max_new_tokens = 160
  config.search.edit.max_new_tokens = 160
  config.search.feedback.max_new_tokens = 96
  config.label = "smollm2:self_feedback_self_edit"  # its row in the tables (eval/tables.py)
  config.output_dir = f"outputs/scaling/smollm2_self_feedback_edit_{config.prompts.source}"
  return config.lock()  # a misspelled override fails instead of adding a key
