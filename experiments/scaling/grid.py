"""The paper's scaling grid: drafts (1-8) x feedbacks per draft (1-16) x edits per group (1-4).

Launch one grid point (the paper's best is 8 drafts x 16 effective feedbacks, Select RM):
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:drafts=8,feedbacks=16,edits=1
    # the same point at CPU scale, on the embedded model:
    python -m helpsteer_jax.scale --config=experiments/scaling/grid.py:size=smollm2,drafts=2,feedbacks=2
Sweep: launch/local.sh or the cluster scripts over the `drafts`/`feedbacks`/`edits` values.
Argument keys: size (70b | smollm2), drafts, feedbacks, edits, prompts (arena_hard | mt_bench).
"""

from helpsteer_jax.scaling.config import parse_arg, sized_config

DRAFTS = (1, 2, 4, 8)
FEEDBACKS = (1, 2, 4, 8, 16)
EDITS = (1, 2, 4)


def get_config(arg=None):
  a = parse_arg(arg, {"size": "70b", "drafts": "8", "feedbacks": "16", "edits": "1",
                      "prompts": "arena_hard"})
  config = sized_config(a["size"])
  drafts, feedbacks, edits = int(a["drafts"]), int(a["feedbacks"]), int(a["edits"])
  if a["size"] == "70b" and (drafts not in DRAFTS or feedbacks not in FEEDBACKS or edits not in EDITS):
    raise ValueError(f"grid point {drafts}x{feedbacks}x{edits} is outside the paper's grid "
                     f"{DRAFTS} x {FEEDBACKS} x {EDITS}")
  config.prompts.source = a["prompts"]
  config.search.mode = "feedback_edit"
  config.search.num_drafts = drafts
  config.search.num_feedbacks = feedbacks
  config.search.max_effective_feedbacks = feedbacks
  config.search.num_edits = edits
  config.output_dir = f"outputs/scaling/grid_{a['size']}_{a['prompts']}_d{drafts}_f{feedbacks}_e{edits}"
  return config.lock()
