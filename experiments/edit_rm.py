"""Edit reward model (Bradley-Terry) on HelpSteer3 edit_quality: every batch mixes (bad edit, good
edit) and (no edit = the original, good edit) pairs, so the model learns both "follows the
feedback" and "actually edits". It scores the Edit model's samples during RLOO.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/edit_rm.py:tiny --workdir=runs/edit_rm_tiny
    python -m helpsteer_jax.train --config=experiments/edit_rm.py:size=70b --workdir=gs://bucket/edit_rm_70b
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"edit_rm_{size}"
  config.trainer = "reward"
  config.reward = reward_config("bradley_terry", "plain")
  config.data.dataset = "helpsteer3_edit_quality"
  apply_size(config, size, bundled_file="helpsteer3_edit_quality.jsonl")
  config.data.packing = False
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 2
  if size in ("8b", "70b"):
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Edit-RM"
  return config.lock()
