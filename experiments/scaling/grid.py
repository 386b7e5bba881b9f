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
Sweep: launch/local.sh or the cluster scripts over the `drafts`/`feedbacks`/`edits` values.
Argument keys: size (70b | smollm2), policy (nemotron_instruct | llama3.3_instruct), drafts,
feedbacks, edits, prompts (arena_hard | mt_bench).
"""

from helpsteer_jax.scaling.config import parse_arg, sized_config

DRAFTS = (1, 2, 4, 8)
FEEDBACKS = (1, 2, 4, 8, 16)
EDITS = (1, 2, 4)


def get_config(arg=None):
  a = parse_arg(arg, {"size": "70b", "policy": "nemotron_instruct", "drafts": "8", "feedbacks": "16",
                      "edits": "1", "prompts": "arena_hard"})
  config = sized_config(a["size"], a["policy"])
  drafts, feedbacks, edits = int(a["drafts"]), int(a["feedbacks"]), int(a["edits"])
  if a["size"] == "70b" and (drafts not in DRAFTS or feedbacks not in FEEDBACKS or edits not in EDITS):
    raise ValueError(f"grid point {drafts}x{feedbacks}x{edits} is outside the paper's grid "
                     f"{DRAFTS} x {FEEDBACKS} x {EDITS}")
  config.prompts.source = a["prompts"]
  config.search.mode = "feedback_edit"
  config.search.num_drafts = drafts
  config.search.num_feedbacks = feedbacks  # effective; num_feedback_samples = 0 samples 2M (<= 64)
  config.search.num_edits = edits
  policy = "" if a["policy"] == "nemotron_instruct" else f"_{a['policy']}"
  config.output_dir = (f"outputs/scaling/grid_{a['size']}{policy}_{a['prompts']}"
                       f"_d{drafts}_f{feedbacks}_e{edits}")
  return config.lock()
