"""The main job: the Feedback-Edit inference-time scaling search over a prompt set.

    python -m helpsteer_jax.scale --config=experiments/scaling/smollm2_self_feedback_edit.py

Results are appended to `<output_dir>/results.jsonl` prompt by prompt, in prompt order, as each
prompt's tree completes, so an interrupted run loses only the prompts in flight and a rerun resumes
where it stopped; `summary.json` (with the engine's slot use and tokens/s per stage) and
`distill.jsonl` (the chosen answers as SFT data) are rebuilt at the end.
`--config.search.schedule=staged` runs it one stage at a time over all prompts (drafts, feedback,
edits, selection) with only that stage's model loaded; each finished sample goes to
`<output_dir>/stages/` first, and a rerun resumes inside the stage (scaling/staged.py). Both
schedules give the same records.
Several hosts run one search SPMD (`--config.distributed`: automatic on TPU pods and under SLURM,
`mode=explicit` with a coordinator otherwise) over a mesh of all their devices; process 0 writes.
With `--config.prompts.shard=I/N` the run takes its share of the prompts into
`<output_dir>/shard-I-of-N`; `python -m helpsteer_jax.merge` joins the shards into one folder.
`output_dir` may be a bucket URL (gs://bucket/search1); a killed run resumes from the bucket alike.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from helpsteer_jax import entry_point
from helpsteer_jax.parallel.distributed import initialize, settings_from_config

# `--help` lists this config's fields (or those of the --config file given beside it).
from helpsteer_jax.scaling.config import default_config as HELP_CONFIG  # noqa: E402,F401

# The search's orchestration lives in scaling/run.py; its functions are named here for callers of
# `helpsteer_jax.scale.run_search`.
from helpsteer_jax.scaling.run import build_search, output_folder, run_search, search_settings  # noqa: F401

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=experiments/scaling/smollm2_self_feedback_edit.py")
  # Multi-host start (TPU pods, SLURM, or explicit) before anything touches the devices.
  initialize(settings_from_config(_CONFIG.value.get("distributed", None)))
  summary = run_search(_CONFIG.value)
  keys = (
    "num_prompts",
    "token_multiple",
    "mean_token_multiple_per_prompt",
    "mean_best_score",
    "mean_draft_score",
    "best_is_an_edit",
    "mean_effective_feedbacks_per_draft",
  )
  print("\n".join(f"{k}: {summary.get(k)}" for k in keys))
  print(f"results in {output_folder(_CONFIG.value)}")


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
