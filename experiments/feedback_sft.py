"""Feedback-model SFT on HelpSteer3 feedback: (conversation, response) -> "The response is X helpful ...".

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/feedback_sft.py:tiny --workdir=runs/feedback_sft_tiny
    python -m helpsteer_jax.train --config=experiments/feedback_sft.py:size=70b --workdir=gs://bucket/feedback_sft_70b
Plan the 70B fit first:
    python -m helpsteer_jax.plan --config=experiments/feedback_sft.py:size=70b --mesh=1,-1,1 --devices=256
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"feedback_sft_{size}"
  config.data.dataset = "helpsteer3_feedback"
  apply_size(config, size, bundled_file="helpsteer3_feedback.jsonl")
  if size in ("8b", "70b"):
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Feedback-SFT"
  return config.lock()
