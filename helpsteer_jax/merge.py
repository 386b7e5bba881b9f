"""Joins search run folders (prompt shards, or prompt ranges run apart) into one run folder.

    python -m helpsteer_jax.merge --inputs=outputs/scaling/grid_m4 --output=outputs/scaling/grid_m4/merged
    python -m helpsteer_jax.merge --inputs=runs/shard-0-of-2,runs/shard-1-of-2 --output=runs/all

An input is a run folder, or a parent folder whose `shard-I-of-N` subfolders are run folders. The
runs must share one config but for `output_dir` and `prompts.shard`, and no prompt may be in two of
them. The output gets `results.jsonl` in the run's prompt order, and `summary.json` and
`distill.jsonl` recomputed from the records, the layout `evaluate` and `tables` read
(scaling/merge.py). Inputs and output may be local folders or bucket URLs (gs://bucket/run).
"""

from __future__ import annotations

from absl import app, flags

from helpsteer_jax import entry_point


def run():
  inputs = flags.DEFINE_list("inputs", None, "Run folders, or folders of shard-I-of-N run folders, comma-separated.")
  output = flags.DEFINE_string("output", None, "The merged run folder (new, or one a merge wrote).")

  def main(argv):
    del argv
    if not inputs.value or not output.value:
      raise app.UsageError("--inputs and --output are required")
    from helpsteer_jax.scaling.merge import MergeError, merge_runs

    try:
      summary = merge_runs(inputs.value, output.value)
    except MergeError as e:
      raise app.UsageError(str(e)) from None
    print(
      f"{len(summary['merged_from'])} run folders, {summary['num_prompts']} of {summary['prompts_in_run']} "
      f"prompts; token_multiple: {summary.get('token_multiple')}"
    )
    print(f"merged into {output.value}")

  entry_point.run(main)


if __name__ == "__main__":
  run()
