"""The default scaling-search config; experiment files under experiments/scaling/ start from it."""

from __future__ import annotations

from ml_collections import ConfigDict


def stage(temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 256) -> ConfigDict:
  return ConfigDict({"temperature": temperature, "top_p": top_p, "top_k": None,
                     "max_new_tokens": max_new_tokens}, type_safe=False)


def role(path: str = "policy", param_dtype: str = "") -> ConfigDict:
  """`path`: an HF folder or .gguf; "policy" = the policy plays the role; "" = embedded SmolLM2."""
  return ConfigDict({"path": path, "param_dtype": param_dtype})


def default_config() -> ConfigDict:
  config = ConfigDict()
  config.policy = role(path="")  # the embedded SmolLM2-135M-Instruct
  config.feedback_model = role()
  config.edit_model = role()
  config.selector = role()
  config.selector.kind = "generative_judge"  # generative_judge | reward_model | none
  config.prompts = ConfigDict({"source": "arena_hard", "path": "", "limit": 4, "start": 0})
  config.search = ConfigDict({
      "mode": "feedback_edit",
      "num_drafts": 2,
      "num_feedbacks": 2,
      "max_effective_feedbacks": 3,
      "feedback_group_size": 3,
      "num_edits": 1,
      "feedback_rule": "constructive",
      "draft": stage(),
      "feedback": stage(temperature=1.0, max_new_tokens=160),
      "edit": stage(),
      "select_drafts": True,
      "measure_greedy": True,
      "batch_size": 16,
      "seed": 0,
  })
  config.prompts_per_batch = 4
  config.mesh = (1, 1, 1)  # (data, fsdp, tensor); -1 = the rest of the devices
  config.output_dir = "outputs/scaling/default"
  return config


def parse_arg(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
  """`"drafts=8,feedbacks=16"` -> dict over `defaults`; unknown keys fail."""
  values = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"config argument {part!r}: expected key=value with key in {sorted(defaults)}")
    values[key] = value
  return values


# Checkpoint folders of the 70B setup (HF format; convert with `python -m helpsteer_jax.convert`).
LLAMA3_70B_ROLES = {
    "policy": "checkpoints/Llama-3.3-70B-Instruct",
    "feedback": "checkpoints/Llama-3.3-Nemotron-70B-Feedback",
    "edit": "checkpoints/Llama-3.3-Nemotron-70B-Edit",
    "edit_sft": "checkpoints/Llama-3.3-Nemotron-70B-Edit-SFT",
    "select": "checkpoints/Llama-3.3-Nemotron-70B-Select",
}


def sized_config(size: str) -> ConfigDict:
  """The shared part of the paper-scale configs: `70b` (real roles, bf16, 8-way tensor parallel)
  or `smollm2` (the embedded model in every role: the same experiment at CPU scale)."""
  config = default_config()
  if size == "70b":
    config.policy = role(LLAMA3_70B_ROLES["policy"], "bfloat16")
    config.feedback_model = role(LLAMA3_70B_ROLES["feedback"], "bfloat16")
    config.edit_model = role(LLAMA3_70B_ROLES["edit"], "bfloat16")
    config.selector = role(LLAMA3_70B_ROLES["select"], "bfloat16")
    config.selector.kind = "reward_model"
    config.mesh = (1, 1, -1)  # tensor parallel over all devices of the host (8 GPUs or TPU cores)
    config.search.batch_size = 64
    config.prompts.limit = 0  # all 500 Arena-Hard questions
    for name, tokens in (("draft", 2048), ("feedback", 512), ("edit", 2048)):
      config.search[name].max_new_tokens = tokens
  elif size == "smollm2":
    config.prompts.limit = 3
    for name, tokens in (("draft", 160), ("feedback", 96), ("edit", 160)):
      config.search[name].max_new_tokens = tokens
  else:
    raise ValueError(f"size={size!r}; expected 70b or smollm2")
  return config
