"""Select reward model: Bradley-Terry on HelpSteer3 preference pairs (chosen/rejected from the sign
of overall_preference, ties dropped), with the scaled loss |label| * -log sigmoid(r_c - r_r).
The scaling search's selector scores every candidate with it.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/select_rm.py:tiny --workdir=runs/select_rm_tiny
    python -m helpsteer_jax.train --config=experiments/select_rm.py:size=70b --workdir=gs://bucket/select_rm_70b
Other losses: --config.reward.bt_loss=plain | margin | scaled

The 70B recipe: unpublished here, so the project's shared large-size shape (train/config.py):
Llama-3.3-70B-Instruct, 1 epoch of HelpSteer3 preference train (38,459 pairs before ties are
dropped: at most 300 steps), 128 pairs per step, lr 2e-6 constant after 10 warmup steps, AdamW
(0.9, 0.98), weight decay 0.01; held-out loss and accuracy every 10 steps on the validation
split, and the checkpoint of highest pairwise accuracy exported.
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"select_rm_{size}"
  config.trainer = "reward"
  config.reward = reward_config("bradley_terry", "scaled")
  config.data.dataset = "helpsteer3_preference"
  apply_size(config, size, bundled_file="helpsteer3_preference.jsonl")
  config.data.packing = False
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 2
  if size in ("8b", "70b"):
    config.eval_every = 10
    config.keep_best_by = "accuracy"
    config.export_from = "best"
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Select"
  return config.lock()
