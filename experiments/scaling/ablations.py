"""The main and ablation tables' runs: baselines and ablations of the Feedback-Edit search, all
through the same code path, at one operating point.

    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=best_of_n
    python -m helpsteer_jax.scale --config=experiments/scaling/ablations.py:variant=greedy,size=smollm2
Variants:
  greedy                    one greedy answer of the policy (a table's base row)
  best_of_n                 Best-of-N chosen by the selector, N sampling as many responses as the
                            full system does at this point (equal tokens: Best-of-16 at 8 x 16)
  feedback_edit             the full system (trained Feedback and Edit models)
  self_feedback_self_edit   the policy writes the feedback and the edits
  feedback_self_edit        trained Feedback model, the policy edits
  edit_without_feedback     the Edit model revises with no feedback
  edit_without_rl           the Edit model before RLOO (its SFT checkpoint)
Operating points (`point=`): `main`, the main table's and the ablation table's (1 draft x 3
effective feedbacks, one edit: the paper reports its ablation rows at the main-table setting but
the public text does not give its shape, so this is the project's choice, docs/reproducing.md), and
`best`, the paper's best system (8 drafts x 16 effective feedbacks). `drafts=` and `feedbacks=`
override either.

Each run's `label` is "<policy>:<variant>", the table row its evaluations fill (eval/tables.py):
the main table holds the greedy and feedback_edit rows of every policy, the ablation table every
variant of one policy. At `size=smollm2` the embedded model plays every role, and each variant is
still its own config and its own outputs: the Feedback role reads NVIDIA's `nemotron` layout where
self-feedback is the policy in the plain layout, and, one model having no trained Edit pair, the
Edit model is stood in for by the embedded model in bfloat16 and the Edit model before RL by it in
float16 (numerically other models), unless `edit=` and `edit_sft=` name exports of
experiments/edit_rloo.py and experiments/edit_sft.py.
Sweep: `get_sweep(arg)` lists every variant of the ablation policy, then the other policies' main
table rows; launch/sweep.sh runs them.
Argument keys: variant, size (70b | smollm2), policy (70b: nemotron_instruct | llama3.3_instruct;
smollm2: smollm2), point (main | best), drafts, feedbacks, prompts (arena_hard | mt_bench |
alpaca_eval), feedback, edit, edit_sft (model paths for those roles, at any size).
"""

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.scaling.config import DEFAULT_POLICY, LLAMA3_70B_ROLES, POLICIES, role, sized_config
from helpsteer_jax.scaling.search_settings import settings_from_config

VARIANTS = (
  "greedy",
  "best_of_n",
  "feedback_edit",
  "self_feedback_self_edit",
  "feedback_self_edit",
  "edit_without_feedback",
  "edit_without_rl",
)
MAIN_TABLE_VARIANTS = ("greedy", "feedback_edit")
# (drafts, effective feedbacks per draft) of each operating point.
POINTS = {"main": (1, 3), "best": (8, 16)}
ARGUMENTS = dict(
  variant="feedback_edit",
  size="70b",
  policy="",
  point="main",
  drafts="",
  feedbacks="",
  prompts="arena_hard",
  feedback="",
  edit="",
  edit_sft="",
)
# At size=smollm2: the precision of the embedded model standing in for each Edit model.
SMOLLM2_EDIT_DTYPES = {"edit": "bfloat16", "edit_sft": "float16"}


def get_sweep(arg=None) -> list[str]:
  """The config argument of every variant of the ablation policy (`policy=`, the size's default),
  then the main table's rows (greedy, feedback_edit) of the size's other policies; `arg` fixes
  the other keys."""
  a = parse_arg(arg, **ARGUMENTS)
  policy = a["policy"] or DEFAULT_POLICY[a["size"]]
  base = ",".join(f"{k}={v}" for k, v in a.items() if v and k not in ("variant", "policy"))
  out = [f"variant={v},policy={policy},{base}" for v in VARIANTS]
  for other in sorted(POLICIES.get(a["size"], {})):
    if other != policy:
      out += [f"variant={v},policy={other},{base}" for v in MAIN_TABLE_VARIANTS]
  return out


def get_config(arg=None):
  a = parse_arg(arg, positional="variant", **ARGUMENTS)
  variant, size = a["variant"], a["size"]
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}")
  if a["point"] not in POINTS:
    raise ValueError(f"point={a['point']!r}; expected one of {sorted(POINTS)}")
  config = sized_config(size, a["policy"])
  policy = a["policy"] or DEFAULT_POLICY[size]
  config.prompts.source = a["prompts"]
  s = config.search
  drafts, feedbacks = POINTS[a["point"]]
  s.num_drafts = int(a["drafts"] or drafts)
  s.num_feedbacks = int(a["feedbacks"] or feedbacks)  # effective ones; 2M are sampled (at most 64)
  full_system = settings_from_config(s)  # the feedback_edit tree at this point
  s.mode = {"greedy": "greedy", "best_of_n": "best_of_n", "edit_without_feedback": "edit_without_feedback"}.get(
    variant, "feedback_edit"
  )
  if variant == "best_of_n":  # as many responses as the full system samples
    s.num_drafts = full_system.responses_per_prompt
  if size == "smollm2":  # the dedicated roles: the embedded model, in their layouts and stand-ins
    config.feedback_model = role("", prompt_format="nemotron")
    config.edit_model = role("", SMOLLM2_EDIT_DTYPES["edit"])
  _given_role(config, "feedback_model", a["feedback"])
  _given_role(config, "edit_model", a["edit"])
  if variant == "self_feedback_self_edit":  # the policy in the project's own layouts
    config.feedback_model = role("policy")
    config.edit_model = role("policy")
  elif variant == "feedback_self_edit":
    config.edit_model = role("policy")
  elif variant == "edit_without_rl":
    config.edit_model = (
      role(LLAMA3_70B_ROLES["edit_sft"], config.policy.param_dtype)
      if size == "70b"
      else role("", SMOLLM2_EDIT_DTYPES["edit_sft"])
    )
    _given_role(config, "edit_model", a["edit_sft"])
  config.label = f"{policy}:{variant}"
  config.output_dir = f"outputs/scaling/ablation_{size}_{policy}_{a['point']}_{a['prompts']}_{variant}"
  return config.lock()


def _given_role(config, block: str, path: str) -> None:
  """The role `block` played by the model at `path`, when one is given (in the policy's dtype)."""
  if path:
    config[block] = role(path, config.policy.param_dtype, config[block].prompt_format)
