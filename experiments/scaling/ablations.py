"""Baselines and ablations of the Feedback-Edit search, all through the same code path.

    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=best_of_n
    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=greedy,size=smollm2
Variants:
  greedy                    one greedy answer of the policy
  best_of_n                 N drafts, chosen by the Select RM (88.5 on Arena-Hard in the paper)
  feedback_edit             the full system (trained Feedback and Edit models)
  self_feedback_self_edit   the policy writes the feedback and the edits
  feedback_self_edit        trained Feedback model, the policy edits
  edit_without_feedback     the Edit model revises with no feedback
  edit_without_rl           the Edit model before RLOO (its SFT checkpoint)
`feedbacks` counts effective feedbacks per draft (the search samples 2M, at most 64). The main
table's bare Llama-3.3-70B-Instruct row is `variant=greedy,policy=llama3.3_instruct`; any variant
takes `policy=llama3.3_instruct` to draft with that model instead of Llama-3.1-Nemotron-70B-Instruct.
Sweep: `get_sweep(arg)` lists every variant (and the base row); launch/sweep.sh runs them.
Argument keys: variant, size (70b | smollm2), policy (nemotron_instruct | llama3.3_instruct),
drafts, feedbacks, prompts.
"""

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.scaling.config import LLAMA3_70B_ROLES, role, sized_config

VARIANTS = ("greedy", "best_of_n", "feedback_edit", "self_feedback_self_edit", "feedback_self_edit",
            "edit_without_feedback", "edit_without_rl")


def get_sweep(arg=None) -> list[str]:
  """The config argument of every variant, then the main table's bare base row
  (`variant=greedy,policy=llama3.3_instruct`); `arg` fixes size, drafts, feedbacks and prompts."""
  a = parse_arg(arg, size="70b", drafts="8", feedbacks="16", prompts="arena_hard")
  base = ",".join(f"{k}={v}" for k, v in a.items())
  out = [f"variant={v},{base}" for v in VARIANTS]
  if a["size"] == "70b":
    out.append(f"variant=greedy,policy=llama3.3_instruct,{base}")
  return out


def get_config(arg=None):
  a = parse_arg(arg, positional="variant", variant="feedback_edit", size="70b",
                policy="nemotron_instruct", drafts="8", feedbacks="16", prompts="arena_hard")
  variant = a["variant"]
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}")
  config = sized_config(a["size"], a["policy"])
  config.prompts.source = a["prompts"]
  s = config.search
  s.num_drafts = int(a["drafts"])
  s.num_feedbacks = int(a["feedbacks"])  # effective ones; 2M are sampled (at most 64)
  s.mode = {"greedy": "greedy", "best_of_n": "best_of_n",
            "edit_without_feedback": "edit_without_feedback"}.get(variant, "feedback_edit")
  dtype = config.policy.param_dtype
  if variant == "self_feedback_self_edit":  # the policy in the project's own layouts
    config.feedback_model = role("policy")
    config.edit_model = role("policy")
  elif variant == "feedback_self_edit":
    config.edit_model = role("policy")
  elif variant == "edit_without_rl" and a["size"] == "70b":
    config.edit_model = role(LLAMA3_70B_ROLES["edit_sft"], dtype)
  policy = "" if a["policy"] == "nemotron_instruct" else f"_{a['policy']}"
  config.output_dir = f"outputs/scaling/ablation_{a['size']}{policy}_{a['prompts']}_{variant}"
  return config.lock()
