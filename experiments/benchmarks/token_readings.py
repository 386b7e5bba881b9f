"""What each reading of the paper's tree and token account costs (scaling/token_readings.py).

    python experiments/benchmarks/token_readings.py [--prompts=3 --drafts=4 --feedbacks=6]

1. At the paper's point (8 drafts x 16 effective feedbacks, 32 sampled, one edit per group of 3)
   and the 70B stage lengths of docs/reproducing.md's estimate, each reading's expected token
   multiple and the Best-of-N that samples as many answers.
2. On the demo workload (the README's config, experiments/scaling/smollm2_self_feedback_edit.py:
   the embedded SmolLM2-135M-Instruct in every role, its Arena-Hard prompts and stage lengths) at
   `--drafts` x `--feedbacks` (wide enough that a draft has two feedback groups): one search
   under the widest reading (feedback on every draft, an edit per group), each reading's multiple
   read from its records (a reading samples a part of that tree with the same keys), beside the
   multiple expected from the run's own mean stage lengths.
Writes a Markdown report (default experiments/benchmarks/results/token_readings.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import sys
import tempfile

from timing import cpu_name, write_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "experiments", "scaling", "smollm2_self_feedback_edit.py")
# Mean generated tokens per answer at 70B on Arena-Hard, as docs/reproducing.md's estimate takes
# them: drafts, edits and the greedy answer ~600, a feedback ~150.
PAPER_LENGTHS = dict(draft=600.0, feedback=150.0, edit=600.0, greedy=600.0)


def _demo_config(args, out_dir):
  spec = importlib.util.spec_from_file_location("demo", DEMO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.prompts.limit = args.prompts
  s = config.search
  s.num_drafts, s.num_feedbacks, s.num_feedback_samples = args.drafts, args.feedbacks, args.feedbacks
  s.feedback_drafts, s.edits_from, s.token_account = 0, "every_group", "generated"  # the widest reading
  config.output_dir = out_dir
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--prompts", type=int, default=3)
  parser.add_argument("--drafts", type=int, default=4)
  parser.add_argument("--feedbacks", type=int, default=6)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "benchmarks", "results", "token_readings.md"))
  args = parser.parse_args()
  sys.path.insert(0, REPO)
  from helpsteer_jax import scale
  from helpsteer_jax.scaling.results import read_records
  from helpsteer_jax.scaling.search_settings import SearchSettings
  from helpsteer_jax.scaling.token_readings import READINGS, StageLengths, expected_multiple, measured_multiple

  paper = SearchSettings(num_drafts=8, num_feedbacks=16)
  lengths = StageLengths(**PAPER_LENGTHS)
  lines = [
    "# Token multiple of each reading of the tree and the token account",
    "",
    f"CPU: {cpu_name()}",
    "",
    "## 1. The paper's point (8 x 16, 32 feedbacks sampled per draft) at the 70B stage lengths",
    f"Stage lengths: {PAPER_LENGTHS}.",
    "",
    "| reading | token multiple | Best-of-N at equal answers |",
    "|---|---|---|",
  ]
  for reading in READINGS:
    settings = reading.apply(paper)
    lines.append(
      f"| {reading.name} | {expected_multiple(settings, lengths):.1f}x | Best-of-{settings.responses_per_prompt} |"
    )

  with tempfile.TemporaryDirectory() as tmp:
    config = _demo_config(args, os.path.join(tmp, "search"))
    summary = scale.run_search(config)
    records = read_records(config.output_dir)
  settings = scale.search_settings(config.search)
  count = lambda kind: [x for r in records for x in kind(r)]
  measured = StageLengths(
    draft=statistics.fmean(d["num_tokens"] for d in count(lambda r: r["drafts"])),
    feedback=statistics.fmean(
      f["num_tokens"] for f in count(lambda r: [f for d in r["drafts"] for f in d["feedbacks"]])
    ),
    edit=statistics.fmean(
      e["num_tokens"] for e in count(lambda r: [e for d in r["drafts"] for g in d["edit_groups"] for e in g["edits"]])
    ),
    greedy=statistics.fmean(r["tokens"]["greedy"] for r in records),
  )
  kept = statistics.fmean(d.get("num_effective_feedbacks", 0) for r in records for d in r["drafts"])
  lines += [
    "",
    f"## 2. The demo workload: {len(records)} Arena-Hard prompts, {args.drafts} drafts x "
    f"{args.feedbacks} effective feedbacks ({args.feedbacks} sampled), embedded SmolLM2-135M-Instruct",
    f"Mean stage lengths measured: {dataclasses.asdict(measured)}; effective feedbacks kept per "
    f"draft: {kept:.2f} of {args.feedbacks} (the expected column assumes all are kept).",
    "",
    "| reading | measured token multiple | expected from the mean lengths | Best-of-N at equal answers |",
    "|---|---|---|---|",
  ]
  for reading in READINGS:
    s = reading.apply(settings)
    lines.append(
      f"| {reading.name} | {measured_multiple(records, reading):.2f}x | "
      f"{expected_multiple(s, measured):.2f}x | Best-of-{s.responses_per_prompt} |"
    )
  lines += ["", f"The run's own summary: token_multiples {summary['token_multiples']}."]
  write_report(args.out, lines)


if __name__ == "__main__":
  main()
