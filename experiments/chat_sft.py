"""SFT on chat-messages JSONL rows `{"messages": [...]}`: e.g. the scaling search's `distill.jsonl`
(best answers of the Feedback-Edit search distilled into the policy), or any hand-made SFT set.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/chat_sft.py:smollm2 --workdir=runs/distill \
        --config.data.path=outputs/scaling/smollm2_self_feedback_edit_arena_hard/distill.jsonl
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"chat_sft_{size}"
  config.data.dataset = "chat_messages"
  apply_size(config, size)
  return config.lock()
