"""Edit reward model (Bradley-Terry) on HelpSteer3 edit_quality: every batch mixes (bad edit, good
edit) and (no edit = the original, good edit) pairs, so the model learns both "follows the
feedback" and "actually edits". It scores the Edit model's samples during RLOO.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/edit_rm.py:tiny --workdir=runs/edit_rm_tiny
    python -m helpsteer_jax.train --config=experiments/edit_rm.py:size=70b --workdir=gs://bucket/edit_rm_70b

The 70B recipe (HelpSteer3, arXiv 2503.04378):
  base model     Llama-3.3-70B-Instruct                                      published
  checkpoint     the one of lowest validation loss (the paper's: step 80),   published (rule)
                 evaluated every 10 steps and exported (export_from=best)
  length         2 epochs of the train split (6,220 pairs: 3,110 rows x 2    unpublished: the
                 pair kinds) = 96 steps, so that step 80 lies inside the run project's choice
  global batch   128 pairs, one pair per 4096-token row                      the project's choice,
                                                                             as every 70B recipe
  learning rate  2e-6 constant after 10 warmup steps, AdamW (0.9, 0.98),     unpublished: the
                 weight decay 0.01, clip 1.0                                 HelpSteer2 RM's
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
    config.num_epochs = 2
    config.eval_every = 10
    config.keep_best_by = "loss"
    config.export_from = "best"
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Edit-RM"
  return config.lock()
