"""HelpSteer2 regression reward model: 5 attributes (helpfulness, correctness, coherence,
complexity, verbosity), MSE with missing labels (-100) masked; the scalar reward is the weighted
sum of the outputs (helpsteer_jax.checkpoints.reward.HELPSTEER2_WEIGHTS).

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/helpsteer2_rm.py:tiny --workdir=runs/hs2_rm_tiny
    python -m helpsteer_jax.train --config=experiments/helpsteer2_rm.py:size=70b --workdir=gs://bucket/hs2_rm_70b
"""

from helpsteer_jax.data.helpsteer2 import HELPSTEER2_ATTRIBUTES
from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"helpsteer2_rm_{size}"
  config.trainer = "reward"
  config.reward = reward_config("regression", labels=tuple(HELPSTEER2_ATTRIBUTES))
  config.data.dataset = "helpsteer2_attributes"
  apply_size(config, size, bundled_file="helpsteer2_default.jsonl")
  config.data.packing = False
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 1
  if size in ("8b", "70b"):
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-HelpSteer2-RM"
  return config.lock()
