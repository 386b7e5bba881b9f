"""HelpSteer2-Preference, stage 1: a helpfulness-only regression reward model on HelpSteer2 (9
outputs, only `helpfulness` labelled, the rest masked), the start of stage 2's scaled
Bradley-Terry model (experiments/helpsteer2_preference_stage2.py).

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/helpsteer2_preference_stage1.py:tiny --workdir=runs/hs2p_stage1_tiny
    python -m helpsteer_jax.train --config=experiments/helpsteer2_preference_stage1.py:size=70b \
        --workdir=gs://bucket/hs2p_stage1_70b

The 70B recipe (HelpSteer2-Preference, arXiv 2410.01257; NeMo-Aligner docs/user-guide/steerlm.rst,
"replicating Reward Modeling training in HelpSteer2-Preference", first command):
  base model     Llama-3.1-70B-Instruct                                      published
  data           HelpSteer2 train, helpfulness only (--only_helpfulness)     published
  outputs        9 (num_attributes=9); the reward is slot 4, helpfulness     published
  length         317 steps over the train split written twice (2 epochs)     published (steps)
  global batch   128 responses, one per 4096-token row                       published
  learning rate  2e-6 constant after 10 warmup steps                         published
  optimizer      AdamW (0.9, 0.98), weight decay 0.1 (training_rm.yaml)      NeMo-Aligner defaults
  checkpoint     the last, exported with its head for stage 2                published
"""

from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config

STAGE1_EXPORT = "checkpoints/Llama-3.1-{size}-Instruct-HelpSteer2-Helpfulness-RM"


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"helpsteer2_preference_stage1_{size}"
  config.trainer = "reward"
  config.reward = reward_config("regression", labels=tuple(STEERLM_ATTRIBUTES))
  config.data.dataset = "helpsteer2_attributes"
  apply_size(config, size, bundled_file="helpsteer2_default.jsonl")
  for data in (config.data, config.eval_data):
    data.builder.attributes = ",".join(STEERLM_ATTRIBUTES)
    data.builder.labelled_attributes = "helpfulness"
  config.data.packing = False
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 1
  if size in ("8b", "70b"):
    config.init_weights = f"checkpoints/Llama-3.1-{size.upper()}-Instruct"
    config.num_epochs = 0  # the recipe states steps: 317 of 128 over 2 x 20,324 rows
    config.total_steps = 317
    config.optim.weight_decay = 0.1
    config.eval_every = 10
    config.export_dir = STAGE1_EXPORT.format(size=size.upper())
  return config.lock()
