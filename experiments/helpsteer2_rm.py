"""HelpSteer2 regression reward model: HelpSteer2's 5 attributes (helpfulness, correctness,
coherence, complexity, verbosity), MSE with missing labels (-100) masked; the scalar reward is the
weighted sum of the outputs (helpsteer_jax.checkpoints.reward.HELPSTEER2_WEIGHTS).

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/helpsteer2_rm.py:tiny --workdir=runs/hs2_rm_tiny
    python -m helpsteer_jax.train --config=experiments/helpsteer2_rm.py:size=70b --workdir=gs://bucket/hs2_rm_70b

The 70B recipe (HelpSteer2, arXiv 2406.08673; NeMo-Aligner docs/user-guide/steerlm.rst, "replicating
Reward Modeling training in HelpSteer2"):
  base model     Llama-3-70B (base, not instruct)                            published
  outputs        9 (model.regression.num_attributes=9): the SteerLM slots,   published
                 HelpSteer2 labelling the last 5, the first 4 masked
  length         317 steps (trainer.rm.max_steps) over the train split       published (steps)
                 written twice (train_reg_2_epoch.jsonl): 2 epochs
  global batch   128 responses, one per 4096-token row                       published
  learning rate  2e-6 constant (min_lr = lr) after 10 warmup steps           published
  optimizer      AdamW (0.9, 0.98), weight decay 0.1 (training_rm.yaml)      NeMo-Aligner defaults
  checkpoint     the last (the guide saves every 10 steps and keeps the      published
                 final one); held-out loss every 10 steps (val_check_interval)
"""

from helpsteer_jax.data.helpsteer2 import HELPSTEER2_ATTRIBUTES, STEERLM_ATTRIBUTES
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
    config.init_weights = f"checkpoints/Llama-3-{size.upper()}"
    config.reward.labels = tuple(STEERLM_ATTRIBUTES)
    config.data.builder.attributes = ",".join(STEERLM_ATTRIBUTES)
    config.eval_data.builder.attributes = ",".join(STEERLM_ATTRIBUTES)
    config.num_epochs = 0  # the recipe states steps: 317 of 128 over 2 x 20,324 rows
    config.total_steps = 317
    config.optim.weight_decay = 0.1
    config.eval_every = 10
    config.export_dir = f"checkpoints/Llama-3-{size.upper()}-HelpSteer2-RM"
  return config.lock()
