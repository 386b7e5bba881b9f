"""Shared defaults of training experiments and the sizes they come in.

An experiment file (`experiments/feedback_sft.py`, ...) starts from `default_train_config()`,
picks its data set and calls `apply_size(config, size)`:

    tiny     a 2-layer random model with SmolLM2's tokenizer, 128-token rows, the bundled data rows:
             what tests run through the real entry point in seconds
    smollm2  the embedded SmolLM2-135M-Instruct, 512-token rows: a real fine-tune on one CPU
             (scanned layers, projections saved and the rest recomputed, a fused chunked loss)
    8b / 70b Llama-3.1-8B / Llama-3.3-70B-Instruct, bf16 compute with fp32 master weights,
             4096-token rows, full remat, FSDP over every device (the planner checks the fit),
             and the shape the papers' NeMo-Aligner runs share: a global batch of 128 split by
             the mesh (micro-batch 1), one example per row (NeMo-Aligner does not pack), AdamW
             betas (0.9, 0.98), one epoch of the published training split, held-out data from
             the validation split. Each experiment then sets its published recipe (its
             docstring cites where each number comes from).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.data.pipeline import default_data_config
from helpsteer_jax.data.prompt_sources import locate
from helpsteer_jax.parallel.distributed import distributed_config
from helpsteer_jax.parallel.mesh_config import mesh_config
from helpsteer_jax.train.published_sizes import expected_train_examples

SIZES = ("tiny", "smollm2", "8b", "70b")

# Checkpoint folders the large sizes start from (HF format, e.g. as downloaded from the hub).
INIT_WEIGHTS = {
  "8b": "checkpoints/Llama-3.1-8B-Instruct",
  "70b": "checkpoints/Llama-3.3-70B-Instruct",
}


def eval_data_config() -> ConfigDict:
  """The data block for evaluation: one ordered pass, the last partial batch kept."""
  config = default_data_config()
  config.dataset = ""
  config.shuffle = False
  config.num_epochs = 1
  config.drop_remainder = False
  return config


def reward_config(
  objective: str = "bradley_terry",
  bt_loss: str = "plain",
  labels: tuple[str, ...] = ("reward",),
  score_output: str = "",
) -> ConfigDict:
  return ConfigDict({"objective": objective, "bt_loss": bt_loss, "labels": labels, "score_output": score_output})


def default_train_config() -> ConfigDict:
  return ConfigDict(
    {
      "name": "train",
      "trainer": "sft",
      "seed": 0,
      "model": {"preset": "tiny", "overrides": {}},
      "init_weights": "",  # HF folder or .gguf ('embedded' = the bundled SmolLM2); '' = random
      "tokenizer": "",  # '' = from init_weights, else the embedded SmolLM2's; 'llama3' = Llama-3's
      "resume_from": "",  # another run's checkpoint folder to continue from
      # A workdir that holds checkpoints of a run with other settings: "check" refuses to resume
      # it when a field that changes results differs (batch size, learning rate, model, data,
      # seed; see train/run_record.py), naming each; "force" continues and logs each such field.
      "resume": "check",
      # A newest checkpoint that does not restore: "previous" resumes from the newest intact step
      # (logged; the damaged one is moved to <workdir>/corrupt_checkpoints), "none" fails.
      "resume_fallback": "previous",
      "export_dir": "",  # HF folder written at the end of training ('' = none)
      "mesh": mesh_config((1, -1, 1)),
      "distributed": distributed_config(),
      "data": default_data_config(),
      "eval_data": eval_data_config(),  # held-out data: set eval_data.dataset (and path) to use it
      "optim": {
        "learning_rate": 1e-5,
        "warmup_steps": 10,
        "schedule": "cosine",
        "final_lr_fraction": 0.1,
        "constant_steps": 0,  # the final lr held for the last N steps (NeMo's CosineAnnealing)
        "b1": 0.9,
        "b2": 0.95,
        "eps": 1e-8,
        "weight_decay": 0.01,
        "grad_clip_norm": 1.0,
      },
      # Run length: total_steps, or num_epochs > 0 passes over the real training rows (the steps
      # are then counted at start-up; see train/run_length.py). expected_train_examples: the
      # published size of the training split in examples, for planning without the data.
      "total_steps": 1000,
      "num_epochs": 0,
      "expected_train_examples": 0,
      # Rows per optimizer step (0 = data.batch_size; RLOO: x rloo.num_samples), and their split:
      # micro_batch_size rows per data-parallel shard per pass (0 = from grad_accum_steps), the
      # accumulation derived from the mesh (see train/batch_plan.py).
      "global_batch_size": 0,
      "micro_batch_size": 0,
      "grad_accum_steps": 1,
      "loss_chunk": 0,  # SFT: sequence chunk for the logits/loss (0 = whole rows)
      "log_every": 1,
      "eval_every": 0,
      "eval_steps": 20,
      "checkpoint_every": 100,
      "keep_checkpoints": 3,
      "keep_best_by": "loss",  # with held-out data: also keep the best checkpoint (loss | accuracy | '')
      "export_from": "latest",  # latest | best: the parameters export_dir gets
      "async_checkpoints": True,
      "tensorboard": True,
      "progress": True,
    }
  )


def bundled_rows(file_name: str) -> str:
  """A bundled HelpSteer file (`helpsteer_jax/data/files/helpsteer/<file_name>`, or under
  HELPSTEER_DATA_DIR)."""
  return str(locate(f"helpsteer/{file_name}"))


def apply_size(config: ConfigDict, size: str, bundled_file: str = "") -> ConfigDict:
  """Model, batch shape, precision and mesh of one size (see the module docstring)."""
  if size not in SIZES:
    raise ValueError(f"size={size!r}; expected one of {SIZES}")
  if size == "tiny":
    config.model.preset = "tiny"
    config.model.overrides = {"vocab_size": 49152, "max_position_embeddings": 2048}
    config.data.seq_len = 128
    config.data.batch_size = 4
    config.data.truncation = "left"
    config.data.drop_remainder = False  # the bundled files hold a handful of rows
    config.data.path = bundled_rows(bundled_file) if bundled_file else ""
    config.total_steps = 20
    config.checkpoint_every = 10
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 2
  elif size == "smollm2":
    config.model.preset = "smollm2_135m"
    config.init_weights = "embedded"
    config.data.seq_len = 512
    config.data.batch_size = 8
    config.data.truncation = "left"
    # Measured on XLA:CPU (experiments/benchmarks/sft_step.py): the step's scratch memory is
    # allocated afresh on every call, and first-touching it costs more than recomputing the
    # attention and elementwise work, so the projections and the attention's output and row
    # logsumexp are saved and the rest recomputed (13.2 GB -> 3.6 GB of scratch), and the loss is
    # fused in chunks (1.5 GB -> 0.2 GB).
    config.model.overrides = {"remat_policy": "dots_no_batch_attention"}
    config.loss_chunk = 64
    config.total_steps = 200
    config.optim.learning_rate = 2e-5
  else:
    config.model.preset = {"8b": "llama3_8b", "70b": "llama3_70b"}[size]
    config.model.overrides = {"dtype": "bfloat16", "param_dtype": "float32", "remat_policy": "full"}
    config.init_weights = INIT_WEIGHTS[size]
    config.data.seq_len = 4096
    config.data.batch_size = 128
    config.data.packing = False
    config.global_batch_size = 128
    config.micro_batch_size = 1
    config.loss_chunk = 1024
    config.num_epochs = 1
    config.expected_train_examples = expected_train_examples(config.data.dataset)
    config.checkpoint_every = 10
    config.optim.learning_rate = 2e-6 if size == "70b" else 5e-6
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 10
    config.optim.b2 = 0.98
    config.eval_data.dataset = config.data.dataset
    config.eval_data.split = "validation"
  # Held-out rows are cut and batched like the training rows unless set otherwise afterwards.
  for key in ("seq_len", "batch_size", "truncation", "packing"):
    config.eval_data[key] = config.data[key]
  return config


def parse_size(arg: str | None, default: str = "tiny") -> str:
  """`"tiny"`, `"size=70b"` or None -> the size name (config_args.parse_arg's one key, `size`)."""
  return parse_arg(arg, positional="size", size=default)["size"]
