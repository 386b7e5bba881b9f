"""RLOO for the Edit model against the Edit RM (HelpSteer3): k samples per edit request, reward
r' = RM - beta * KL(pi || pi_ref), leave-one-out advantages, token-mean policy gradient.

Launch (size = tiny | smollm2 | 8b | 70b):
    python -m helpsteer_jax.train --config=experiments/edit_rloo.py:tiny --workdir=runs/edit_rloo_tiny
    python -m helpsteer_jax.train --config=experiments/edit_rloo.py:smollm2 --workdir=runs/edit_rloo \
        --config.rloo.reward_model=runs/edit_rm_smollm2/export
    python -m helpsteer_jax.train --config=experiments/edit_rloo.py:size=70b --workdir=gs://bucket/edit_rloo_70b
`tiny` uses a synthetic reward (the fraction of low token ids) so the loop runs without an RM.
Over several hosts (`--config.distributed`, automatic on TPU pods and under SLURM) every process
samples the same rollouts SPMD on the global mesh with the decode engine, and each device trains
on its rows of the batch: the losses are those of one process.

The 70B recipe (HelpSteer3, arXiv 2503.04378; where it is silent, NeMo-Aligner's REINFORCE guide
docs/user-guide/reinforce.rst and examples/nlp/gpt/conf/gpt_reinforce_actor.yaml):
  policy, reward  the Edit SFT model (also the frozen reference), the Edit RM    published
  length          45 steps: the paper's kept step-45 checkpoint is the last      published
  samples         4 per prompt (num_rollouts_per_prompt), temperature 1.0,       NeMo-Aligner
                  top-k / top-p off, up to 2048 new tokens (length_params)
  reward          RM - 0.01 x token mean |log pi - log pi_ref|                   NeMo-Aligner
                  (initial_policy_kl_penalty, use_absolute_kl)
  never ending    out of the leave-one-out baselines, kept in the loss           NeMo-Aligner
                  (rloo.unfinished=exclude_from_baseline)
  optimizer       lr 1e-6 constant, no warmup, weight decay 0.01 (the guide;     NeMo-Aligner
                  the yaml's 0.1 is overridden there), clip 1.0, AdamW (0.9, 0.98)
  global batch    128 samples = 32 prompts x 4, one optimizer step per rollout   the guide's 32
                  batch (the guide splits its 32 x 4 samples into 4 steps of 32: prompts x 4;
                  a step here is fully on-policy)                                the split: project
"""

from ml_collections import ConfigDict

from helpsteer_jax.train.config import apply_size, default_train_config, parse_size


def get_config(arg=None):
  size = parse_size(arg)
  config = default_train_config()
  config.name = f"edit_rloo_{size}"
  config.trainer = "rloo"
  config.data.dataset = "helpsteer3_edit"
  apply_size(config, size, bundled_file="helpsteer3_edit.jsonl")
  config.rloo = ConfigDict(
    {
      "reward_model": "",  # Edit RM folder (HF LlamaForSequenceClassification)
      "synthetic_reward": "",  # instead of an RM: low_token_fraction (tests, smoke runs)
      "num_samples": 4,  # k per prompt
      "beta": 0.01,
      "kl_estimator": "abs",  # abs (mean |log pi - log pi_ref|) | k1 | k3
      # Samples without an end of turn: exclude_from_baseline | drop | penalize | keep.
      "unfinished": "exclude_from_baseline",
      "penalty": -1.0,
      "max_new_tokens": 1024,
      "temperature": 1.0,
      "top_k": 0,  # 0 = no top-k cut
      "top_p": 1.0,
      "reward_batch_size": 16,
      "max_prompt_tokens": 0,  # 0 = whole prompts; else cut from the left (first token kept)
    }
  )
  config.data.seq_len = 0  # rollout rows: see RLOOTask.row_length
  config.data.batch_size = 64  # prompts per step (x num_samples rows)
  config.optim.warmup_steps = 0
  config.optim.schedule = "constant"
  if size == "tiny":
    config.rloo.max_prompt_tokens = 96  # the real rows run to ~3k tokens; a tiny model needs less
    config.rloo.synthetic_reward = "low_token_fraction"
    config.rloo.unfinished = "keep"
    config.rloo.max_new_tokens = 16
    config.rloo.top_k = 8  # a small action space: a random tiny policy learns within steps
    config.rloo.beta = 0.0
    config.data.batch_size = 2
    config.total_steps = 30
    config.checkpoint_every = 10
    config.optim.learning_rate = 1e-2
  elif size == "smollm2":
    config.rloo.reward_model = "runs/edit_rm_smollm2/export"
    config.rloo.max_new_tokens = 256
    config.data.batch_size = 4
    config.optim.learning_rate = 1e-6
  else:
    config.rloo.reward_model = f"checkpoints/Llama-3.3-{size.upper()}-Edit-RM"
    config.init_weights = f"checkpoints/Llama-3.3-{size.upper()}-Edit-SFT"
    config.rloo.max_new_tokens = 2048
    config.data.batch_size = 32  # prompts per step: 32 x 4 samples = the global batch of 128
    config.global_batch_size = 128
    config.num_epochs = 0  # the recipe states steps
    config.expected_train_examples = 0
    config.total_steps = 45
    config.checkpoint_every = 5
    config.eval_data.dataset = ""  # RL has no held-out loss; the step-45 checkpoint is the last
    config.optim.learning_rate = 1e-6
    config.optim.weight_decay = 0.01
    config.optim.grad_clip_norm = 1.0
    config.export_dir = f"checkpoints/Llama-3.3-{size.upper()}-Edit"
  return config.lock()
