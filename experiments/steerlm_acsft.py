"""SteerLM attribute-conditioned SFT on HelpSteer2: the attribute string (e.g.
`helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2`) is given as conditioning and
left out of the loss; at inference the user steers by choosing it.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:tiny --workdir=runs/steerlm_tiny
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:size=70b --workdir=gs://bucket/steerlm_70b
To train on data labelled by an attribute model instead, point `data.path` at the annotated file.
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"steerlm_acsft_{size}"
  config.data.dataset = "helpsteer2_steerlm_sft"
  apply_size(config, size, bundled_file="helpsteer2_default.jsonl")
  if size == "tiny":  # the bundled row's response runs to ~1k tokens
    config.data.seq_len = 2048
    config.data.batch_size = 1
  return config.lock()
