"""Feedback-model SFT on HelpSteer3 feedback: (conversation, response) -> "The response is X helpful ...".

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/feedback_sft.py:tiny --workdir=runs/feedback_sft_tiny
    python -m helpsteer_jax.train --config=experiments/feedback_sft.py:size=70b --workdir=gs://bucket/feedback_sft_70b
Plan the 70B fit first:
    python -m helpsteer_jax.plan --config=experiments/feedback_sft.py:size=70b --mesh=1,-1,1 --devices=128

The 70B recipe (HelpSteer3, arXiv 2503.04378, and its model card):
  base model     Llama-3.3-70B-Instruct                                      published
  length         1 epoch of the train split (~232,680 examples: 38,780 rows,  published (epochs);
                 2 responses x up to 3 feedbacks each) = 1,817 steps         sizes: the data card
  global batch   128 examples, one per 4096-token row (not packed)           published (batch);
                                                                             rows: NeMo-Aligner SFT
  learning rate  2e-6 constant after 10 warmup steps, AdamW (0.9, 0.98),     unpublished: the
                 weight decay 0.01, clip 1.0                                 project's choice, the
                                                                             published HelpSteer2
                                                                             RM shape at 70B
  checkpoint     the last; held-out loss every 100 steps (NeMo-Aligner's     NeMo-Aligner gpt_sft
                 val_check_interval) on the validation split                 defaults
  prompt layout  `nemotron` at 8b/70b: NVIDIA's released Feedback model's    the model card
                 multi-turn request, which the 70B search configs send the
                 Feedback role (formats/nemotron.py; its instruction's end
                 is unpublished, see docs/reproducing.md); `plain` at the
                 CPU sizes, the demo's one-turn layout
"""

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"feedback_sft_{size}"
  config.data.dataset = "helpsteer3_feedback"
  apply_size(config, size, bundled_file="helpsteer3_feedback.jsonl")
  if size in ("8b", "70b"):
    config.num_epochs = 1
    # What the 70B search sends the Feedback role, in training and held-out rows alike.
    config.data.builder.prompt_format = config.eval_data.builder.prompt_format = "nemotron"
    config.eval_every = 100
    config.checkpoint_every = 100
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Feedback-SFT"
  return config.lock()
