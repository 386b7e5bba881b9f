"""What a whole training recipe costs: steps, tokens, FLOPs and hours on a given set of devices.

Counted from the config alone (no data, no compile), so `python -m helpsteer_jax.plan --recipes`
can print it for every 70B experiment on a laptop:

  steps    `run_length.planned_total_steps` (the recipe's steps, or its epochs over the published
           training-split size)
  tokens   what the step computes: every row is `data.seq_len` tokens (rows are padded to a fixed
           shape; unpacked rows pay for their padding), a Bradley-Terry pair is two rows, an RLOO
           sample one row of RLOO_ROW_TOKENS
  FLOPs    6 N per trained token (N: matmul parameters; a reward model has no vocabulary
           projection) plus causal attention, 12 L T N_h H / 2 per token; RLOO adds the policy's
           and the reference's log-probs and the RM's scoring (2 N per token each) and sampling
           (2 N per generated token)
  hours    FLOPs / (devices x peak x MFU). Sampling is bound by memory bandwidth, not FLOPs, so
           RLOO's hours are a floor (docs/70b.md, section 2).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from helpsteer_jax.train.batch_plan import global_batch_size
from helpsteer_jax.train.run_length import planned_total_steps

# The meshes docs/70b.md costs: (name, devices, peak dense bf16 TFLOP/s per device).
MESHES = (
  ("64 x TPU v5p", 64, 459.0),
  ("128 x TPU v5p", 128, 459.0),
  ("32 x H100 (4 nodes)", 32, 989.0),
  ("64 x H100 (8 nodes)", 64, 989.0),
)
DEFAULT_MFU = 0.4  # an assumption; docs/70b.md section 2
RLOO_ROW_TOKENS = 4096  # NeMo-Aligner's rollout_batch_seq_length in its REINFORCE guide


def model_flops_per_token(config, lm_head: bool = True) -> float:
  """Training FLOPs per token: 6 x matmul parameters (the input embedding is a gather; a reward
  model has no vocabulary projection, `lm_head=False`)."""
  from helpsteer_jax.models.create import count_params

  params = count_params(config)
  embed = config.vocab_size * config.hidden_size
  if not config.tie_word_embeddings:
    params -= embed  # the input embedding
  if not lm_head:
    params -= embed  # no [D, V] output projection
  return 6.0 * params


def attention_flops_per_token(config, seq_len: int) -> float:
  return 6.0 * config.num_layers * seq_len * config.num_heads * config.head_dim  # 12 L T N H / 2 (causal)


@dataclasses.dataclass(frozen=True)
class RecipeCost:
  name: str
  steps: int
  global_batch_size: int
  unit: str  # what a row of the global batch is: examples, pairs, responses, samples
  tokens: float  # computed over the whole run
  flops: float  # over the whole run

  def hours(self, devices: int, peak_tflops: float, mfu: float = DEFAULT_MFU) -> float:
    return self.flops / (devices * peak_tflops * 1e12 * mfu) / 3600.0


def recipe_cost(config: ml_collections.ConfigDict) -> RecipeCost:
  from helpsteer_jax.train.model_setup import model_config

  mc = model_config(config)
  rows = global_batch_size(config)
  steps = planned_total_steps(config, int(config.data.batch_size))
  trainer = config.get("trainer", "sft")
  if trainer == "rloo":
    length = RLOO_ROW_TOKENS
    tokens = float(rows * length)
    train = tokens * (model_flops_per_token(mc) + attention_flops_per_token(mc, length))
    forward_per_token = model_flops_per_token(mc) / 3.0  # 2 N: one forward pass
    # Three forward passes over the rows (policy and reference log-probs, the RM's scores) and
    # one per generated token.
    per_step = train + forward_per_token * (3 * tokens + rows * int(config.rloo.max_new_tokens))
    unit = "samples"
  else:
    length = int(config.data.seq_len)
    pair = trainer == "reward" and config.reward.objective == "bradley_terry"
    tokens = float(rows * length * (2 if pair else 1))
    lm_head = trainer != "reward"
    per_step = tokens * (model_flops_per_token(mc, lm_head) + attention_flops_per_token(mc, length))
    unit = "pairs" if pair else "responses" if trainer == "reward" else "examples"
  return RecipeCost(config.get("name", "?"), steps, rows, unit, tokens * steps, per_step * steps)


def cost_table(configs: list[ml_collections.ConfigDict], mfu: float = DEFAULT_MFU) -> str:
  """A Markdown table: one row per recipe, hours on each of MESHES at `mfu`."""
  head = ["recipe", "steps", "global batch", "tokens", "FLOPs"] + [f"h, {m[0]}" for m in MESHES]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for config in configs:
    cost = recipe_cost(config)
    cells = [
      cost.name,
      f"{cost.steps:,}",
      f"{cost.global_batch_size} {cost.unit}",
      f"{cost.tokens / 1e9:.2f} B",
      f"{cost.flops:.2e}",
    ] + [f"{cost.hours(n, peak, mfu):.1f}" for _, n, peak in MESHES]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
