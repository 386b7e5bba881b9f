"""HelpSteer2-Preference, stage 2: scaled Bradley-Terry, |strength| * -log sigmoid(r_c - r_r), on
HelpSteer2-Preference pairs, initialised from stage 1's regression model *with its head*
(experiments/helpsteer2_preference_stage1.py); the reward is output 4, helpfulness.

Launch (size = tiny | smollm2 | 8b | 70b; stage 1 first):
    python -m helpsteer_jax.train --config=experiments/helpsteer2_preference_stage2.py:tiny --workdir=runs/hs2p_stage2_tiny
    python -m helpsteer_jax.train --config=experiments/helpsteer2_preference_stage2.py:size=70b \
        --workdir=gs://bucket/hs2p_stage2_70b

The 70B recipe (HelpSteer2-Preference, arXiv 2410.01257; NeMo-Aligner docs/user-guide/steerlm.rst,
"replicating Reward Modeling training in HelpSteer2-Preference", second command):
  init           stage 1's export, head included (load_rm_head_weights=True) published
  loss           scaled_bt on output 4 (helpfulness), as NeMo-Aligner's      published
                 regression reward model's bt_loss_func
  length         105 steps (trainer.rm.max_steps)                            published (steps)
  global batch   128 responses = 64 pairs (NeMo-Aligner's regression BT      published
                 reads a pair as two adjacent responses)
  order          file order, pairs adjacent (train_random_sampler=False)     published
  learning rate  1e-6 constant after 10 warmup steps                         published
  optimizer      AdamW (0.9, 0.98), weight decay 0.1 (training_rm.yaml)      NeMo-Aligner defaults
  ties           dropped here (NeMo-Aligner keeps them with weight |0| = 0:  the same gradient
                 the same loss, but its 128 responses then hold fewer pairs) per pair
  checkpoint     the last; held-out loss and accuracy every 10 steps         published
"""

from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config

STAGE1_EXPORT = "checkpoints/Llama-3.1-{size}-Instruct-HelpSteer2-Helpfulness-RM"


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"helpsteer2_preference_stage2_{size}"
  config.trainer = "reward"
  config.reward = reward_config("bradley_terry", "scaled", labels=tuple(STEERLM_ATTRIBUTES), score_output="helpfulness")
  config.data.dataset = "helpsteer2_preference"
  apply_size(config, size, bundled_file="helpsteer2_preference.jsonl")
  config.data.packing = False
  config.data.shuffle = False  # pairs in file order, as the published run read them
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 1
  if size in ("8b", "70b"):
    config.init_weights = STAGE1_EXPORT.format(size=size.upper())
    config.data.batch_size = 64  # pairs: 128 responses
    config.global_batch_size = 64
    config.num_epochs = 0  # the recipe states steps
    config.total_steps = 105
    config.optim.learning_rate = 1e-6
    config.optim.weight_decay = 0.1
    config.eval_every = 10
    config.eval_data.batch_size = 64
    config.export_dir = f"checkpoints/Llama-3.1-{size.upper()}-Instruct-HelpSteer2-Preference-RM"
  return config.lock()
