"""SteerLM attribute-conditioned SFT on HelpSteer2: the attribute string (e.g.
`helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2`) is given as conditioning and
left out of the loss; at inference the user steers by choosing it.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:tiny --workdir=runs/steerlm_tiny
    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:size=70b --workdir=gs://bucket/steerlm_70b
To train on data labelled by an attribute model instead, point `data.path` at the annotated file.

The 70B recipe (NeMo-Aligner docs/user-guide/steerlm.rst, "Train the Attribute-Conditioned SFT
Model"):
  learning rate  6e-6 after 1 warmup step, cosine to 5e-6 (min_lr), held at  published
                 5e-6 for the last 200 steps (constant_steps)
  optimizer      weight decay 0.01, AdamW (0.9, 0.98), clip 1.0              published / NeMo-Aligner
  global batch   128 examples, one per 4096-token row (max_seq_length 4096) published
  length         2 epochs (the guide's train_labeled_2ep.jsonl) of the       published (epochs);
                 HelpSteer2 train split, 20,324 rows = 316 steps             sizes: the data card
  base model     Llama-3-70B (base), as the HelpSteer2 reward model          unpublished for this
                                                                             data: project's choice
  checkpoint     the last; held-out loss every 100 steps                     NeMo-Aligner gpt_sft
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
  if size in ("8b", "70b"):
    config.init_weights = f"checkpoints/Llama-3-{size.upper()}"
    config.num_epochs = 2
    config.optim.learning_rate = 6e-6
    config.optim.schedule = "cosine"
    config.optim.final_lr_fraction = 5e-6 / 6e-6
    config.optim.warmup_steps = 1
    config.optim.constant_steps = 200
    config.optim.weight_decay = 0.01
    config.eval_every = 100
    config.checkpoint_every = 100
    config.export_dir = f"checkpoints/Llama-3-{size.upper()}-SteerLM"
  return config.lock()
