"""Edit-model SFT on HelpSteer3 edit: (conversation, response, feedback) -> edited response, with
every order of the feedback list (3 items -> 6 examples per row).

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/edit_sft.py:tiny --workdir=runs/edit_sft_tiny
    python -m helpsteer_jax.train --config=experiments/edit_sft.py:size=70b --workdir=gs://bucket/edit_sft_70b
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
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Edit-SFT"
  return config.lock()
