"""SteerLM attribute-prediction model: the 9 SteerLM outputs (quality, toxicity, humor, creativity,
helpfulness, correctness, coherence, complexity, verbosity) trained on HelpSteer, which labels 5 of
them (the rest are -100 and masked). Its predictions annotate data for attribute-conditioned SFT:

    python -m helpsteer_jax.annotate --model=<exported attribute model> --input=rows.jsonl \
        --output=annotated.jsonl
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:smollm2 --workdir=runs/acsft \
        --config.data.path=annotated.jsonl

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/steerlm_attribute.py:tiny --workdir=runs/attr_tiny

The 70B recipe: the SteerLM guide's attribute model (NeMo-Aligner docs/user-guide/steerlm.rst:
800 steps, global batch 512, 9 outputs, save and evaluate every 10 steps) at the project's 70B
learning rate, 2e-6 constant after 10 warmup steps (the guide's 13B run used training_rm.yaml's
9e-6 cosine; its 70B value is unpublished), weight decay 0.1 (training_rm.yaml).
"""

from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
from helpsteer_jax.train.config import apply_size, default_train_config, parse_size, reward_config


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"steerlm_attribute_{size}"
  config.trainer = "reward"
  config.reward = reward_config("regression", labels=tuple(STEERLM_ATTRIBUTES))
  config.data.dataset = "helpsteer_attributes"
  # HelpSteer (v1) rows share HelpSteer2's fields; the bundled card rows stand in at tiny size.
  apply_size(config, size, bundled_file="helpsteer2_default.jsonl")
  config.data.packing = False
  if size == "tiny":  # the real rows run to about 1000 tokens
    config.data.seq_len = 2048
    config.data.batch_size = 1
  if size in ("8b", "70b"):
    config.data.batch_size = 512
    config.global_batch_size = 512
    config.eval_data.batch_size = 128
    config.num_epochs = 0  # the recipe states steps
    config.total_steps = 800
    config.optim.weight_decay = 0.1
    config.eval_every = 10
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-SteerLM-Attribute"
  return config.lock()
