"""The paper's scaling grid: drafts (1-8) x effective feedbacks per draft (1-16) x edits (1-4).

`feedbacks` is M, the *effective* feedbacks kept per draft; the search samples more (2M, at most
64: `search.num_feedback_samples`) at temperature 0.7 and keeps the effective ones. The paper's
best system is 8 drafts x 16 effective feedbacks from Llama-3.1-Nemotron-70B-Instruct, with
NVIDIA's Feedback, Edit and Select models (Arena-Hard 92.7 against 88.5 for Best-of-N).

Launch one grid point:
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:drafts=8,feedbacks=16,edits=1
    # drafts from Llama-3.3-70B-Instruct instead (an ablation):
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:policy=llama3.3_instruct
    # the same point at CPU scale, on the embedded model:
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:size=smollm2,drafts=2,feedbacks=2
Sweep: `get_sweep(arg)` lists every grid point (60), which launch/sweep.sh runs through any
launcher, e.g. `launch/sweep.sh --dry-run local.sh scale --config=experiments/scaling/grid.py`.
Argument keys: size (70b | smollm2), policy (70b: nemotron_instruct | llama3.3_instruct), drafts,
feedbacks, edits, prompts (arena_hard | mt_bench | alpaca_eval), budget and margin (a token budget,
a multiple of the greedy answer, and a settling margin: search.token_budget, settle_margin; 0 =
off). A budgeted point is labelled "<policy>:budget:..." and drawn as its own line beside the grid:
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:drafts=8,feedbacks=16,budget=6
Under the default reading of the tree (search.edits_from=top_group, token_account=responses:
docs/reproducing.md) a point costs drafts x (1 + edits) answers: 8 x 16 x 1 is 16x greedy.
"""

from helpsteer_jax.config_args import parse_arg
from helpsteer_jax.scaling.config import DEFAULT_POLICY, sized_config

DRAFTS = (1, 2, 4, 8)
FEEDBACKS = (1, 2, 4, 8, 16)
EDITS = (1, 2, 4)


ARGUMENTS = dict(
  size="70b", policy="", drafts="8", feedbacks="16", edits="1", prompts="arena_hard", budget="0", margin="0"
)
AXES = ("drafts", "feedbacks", "edits")


def get_sweep(arg=None) -> list[str]:
  """The config argument of every point of the paper's grid; `arg` fixes the other keys (size,
  policy, prompts). The best point comes first."""
  fixed = {k: v for k, v in parse_arg(arg, **ARGUMENTS).items() if k not in AXES}
  base = ",".join(f"{k}={v}" for k, v in fixed.items())
  points = [(d, f, e) for d in DRAFTS for f in FEEDBACKS for e in EDITS]
  points.sort(key=lambda p: p != (8, 16, 1))
  return [f"{base},drafts={d},feedbacks={f},edits={e}" for d, f, e in points]


def get_config(arg=None):
  a = parse_arg(arg, **ARGUMENTS)
  config = sized_config(a["size"], a["policy"])
  policy = a["policy"] or DEFAULT_POLICY[a["size"]]
  drafts, feedbacks, edits = int(a["drafts"]), int(a["feedbacks"]), int(a["edits"])
  if a["size"] == "70b" and (drafts not in DRAFTS or feedbacks not in FEEDBACKS or edits not in EDITS):
    raise ValueError(
      f"grid point {drafts}x{feedbacks}x{edits} is outside the paper's grid {DRAFTS} x {FEEDBACKS} x {EDITS}"
    )
  config.prompts.source = a["prompts"]
  config.search.mode = "feedback_edit"
  config.search.num_drafts = drafts
  config.search.num_feedbacks = feedbacks  # effective; num_feedback_samples = 0 samples 2M (<= 64)
  config.search.num_edits = edits
  # A point of the scaling plot, not a table row; its greedy reference is the `<policy>:greedy`
  # run of experiments/scaling/ablations.py.
  point = f"d{drafts}_f{feedbacks}_e{edits}"
  budget, margin = float(a["budget"]), float(a["margin"])
  if budget or margin:
    # The same tree shape spent under a token budget (scaling/token_budget.py): a point of the
    # budgeted line beside the grid's, at the token multiple it spent.
    config.search.token_budget = budget
    config.search.settle_margin = margin
    point += f"_b{budget:g}" + (f"_m{margin:g}" if margin else "")
    config.label = f"{policy}:budget:{point}"
    config.output_dir = f"outputs/scaling/budget_{a['size']}_{policy}_{a['prompts']}_{point}"
    return config.lock()
  config.label = f"{policy}:grid:{point}"
  config.output_dir = f"outputs/scaling/grid_{a['size']}_{policy}_{a['prompts']}_{point}"
  return config.lock()
