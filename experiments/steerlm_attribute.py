"""SteerLM attribute-prediction model: the 9 SteerLM outputs (quality, toxicity, humor, creativity,
helpfulness, correctness, coherence, complexity, verbosity) trained on HelpSteer, which labels 5 of
them (the rest are -100 and masked). Its predictions annotate data for attribute-conditioned SFT:

    python -m helpsteer_jax.annotate --model=<exported attribute model> --input=rows.jsonl \
        --output=annotated.jsonl
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:smollm2 --workdir=runs/acsft \
        --config.data.path=annotated.jsonl

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/steerlm_attribute.py:tiny --workdir=runs/attr_tiny
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
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-SteerLM-Attribute"
  return config.lock()
