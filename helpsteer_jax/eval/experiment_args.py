"""The shared argument of the experiments/eval configs: `variant` then `key=value` overrides.

    arena_hard.py:tiny
    arena_hard.py:full,answers=outputs/scaling/ablation_70b_nemotron_instruct_main_arena_hard_feedback_edit
    arena_hard.py:full,answers=model_answer/gpt-4o-2024-05-13.jsonl,label=gpt-4o
Keys: variant (tiny | full), model (checkpoint path), answers (answer file or scaling output
folder), label (the table row; a scaling folder names its own), judge (http | generative |
reward_model). The config is locked, so every other change goes through `--config.<field>=...`
overrides and is checked.
"""

from __future__ import annotations

import os

from ml_collections import ConfigDict

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.eval.config import JUDGE_KINDS, default_config, tiny_overrides

VARIANTS = ("tiny", "full")
# The 70B policy of the paper setup (converted HF folder), used by the `full` variant.
LLAMA3_70B_POLICY = "checkpoints/Llama-3.3-70B-Instruct"


def parse(arg: str | None) -> dict[str, str]:
  values = parse_arg(arg, positional="variant", variant="full", model="", answers="", label="", judge="")
  if values["variant"] not in VARIANTS:
    raise ValueError(f"variant={values['variant']!r}; expected one of {VARIANTS}")
  if values["judge"] and values["judge"] not in JUDGE_KINDS:
    raise ValueError(f"judge={values['judge']!r}; expected one of {JUDGE_KINDS}")
  return values


def build(benchmark: str, arg: str | None) -> ConfigDict:
  a = parse(arg)
  config = default_config(benchmark)
  if a["variant"] == "tiny":
    tiny_overrides(config)
  else:
    config.model.path = LLAMA3_70B_POLICY
    config.model.param_dtype = "bfloat16"
    config.mesh.shape = (1, 1, -1)  # tensor parallel over the host's devices
    config.generation.batch_size = 64
  if a["model"]:
    config.model.path = a["model"]
  if a["answers"]:
    config.model.answers = a["answers"]
  if a["judge"]:
    config.judge.kind = a["judge"]
  config.label = a["label"]
  name = a["label"].replace(":", "_") or os.path.basename(
    os.path.normpath(a["answers"] or config.model.path or "smollm2")
  )
  config.output_dir = f"outputs/eval/{benchmark}/{a['variant']}_{name}"
  return config
