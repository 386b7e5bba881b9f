"""Baselines and ablations of the Feedback-Edit search, all through the same code path.

    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=best_of_n
    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=greedy,size=smollm2
Variants:
  greedy                    one greedy answer of the policy
  best_of_n                 N drafts, chosen by the Select RM
  feedback_edit             the full system (trained Feedback and Edit models)
  self_feedback_self_edit   the policy writes the feedback and the edits
  feedback_self_edit        trained Feedback model, the policy edits
  edit_without_feedback     the Edit model revises with no feedback
  edit_without_rl           the Edit model before RLOO (its SFT checkpoint)
Argument keys: variant, size (70b | smollm2), drafts, feedbacks, prompts.
"""

from helpsteer_jax.scaling.config import LLAMA3_70B_ROLES, parse_arg, role, sized_config

VARIANTS = ("greedy", "best_of_n", "feedback_edit", "self_feedback_self_edit", "feedback_self_edit",
            "edit_without_feedback", "edit_without_rl")


def get_config(arg=None):
  a = parse_arg(arg, {"variant": "feedback_edit", "size": "70b", "drafts": "8", "feedbacks": "16",
                      "prompts": "arena_hard"})
  variant = a["variant"]
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}")
  config = sized_config(a["size"])
  config.prompts.source = a["prompts"]
  s = config.search
  s.num_drafts = int(a["drafts"])
  s.num_feedbacks = s.max_effective_feedbacks = int(a["feedbacks"])
  s.mode = {"greedy": "greedy", "best_of_n": "best_of_n",
            "edit_without_feedback": "edit_without_feedback"}.get(variant, "feedback_edit")
  dtype = config.policy.param_dtype
  if variant == "self_feedback_self_edit":
    config.feedback_model = role("policy")
    config.edit_model = role("policy")
  elif variant == "feedback_self_edit":
    config.edit_model = role("policy")
  elif variant == "edit_without_rl" and a["size"] == "70b":
    config.edit_model = role(LLAMA3_70B_ROLES["edit_sft"], dtype)
  config.output_dir = f"outputs/scaling/ablation_{a['size']}_{a['prompts']}_{variant}"
  return config.lock()
