"""Edit-model SFT on HelpSteer3 edit: (conversation, response, feedback) -> edited response, with
every order of the feedback list (3 items -> 6 examples per row).

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/edit_sft.py:tiny --workdir=runs/edit_sft_tiny
    python -m helpsteer_jax.train --config=experiments/edit_sft.py:size=70b --workdir=gs://bucket/edit_sft_70b

The 70B recipe (HelpSteer3, arXiv 2503.04378, and its model card):
  base model     Llama-3.3-70B-Instruct                                      published
  length         1 epoch of the train split (82,428 examples: 13,738 rows    published (epochs);
                 x 6 feedback orders) = 643 steps                            sizes: the data card
  global batch   128 examples, one per 4096-token row (not packed)           published (batch);
                                                                             rows: NeMo-Aligner SFT
  learning rate  2e-6 constant after 10 warmup steps, AdamW (0.9, 0.98),     unpublished: the
                 weight decay 0.01, clip 1.0                                 project's choice
  checkpoint     the last; held-out loss every 100 steps                     NeMo-Aligner gpt_sft
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"edit_sft_{size}"
  config.data.dataset = "helpsteer3_edit"
  apply_size(config, size, bundled_file="helpsteer3_edit.jsonl")
  if size == "tiny":  # the bundled rows' edited responses alone run to ~1.5k tokens
    config.model.overrides = {**config.model.overrides, "max_position_embeddings": 4096}
    config.data.seq_len = 4096
    config.data.batch_size = 1
  if size in ("8b", "70b"):
    config.num_epochs = 1
    config.eval_every = 100
    config.checkpoint_every = 100
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Edit-SFT"
  return config.lock()
