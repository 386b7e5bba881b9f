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
