"""Scores from existing judgment files: no answers are generated and no judge is called.

    python -m helpsteer_jax.rescore --benchmark=arena_hard \\
        --judgments=arena-hard-auto/data/arena-hard-v0.1/model_judgment/gpt-4-1106-preview
    python -m helpsteer_jax.rescore --benchmark=arena_hard --style_control \\
        --judgments=.../model_judgment/gpt-4-1106-preview --answers=.../model_answer
    python -m helpsteer_jax.rescore --benchmark=alpaca_eval \\
        --judgments=results/my_model/weighted_alpaca_eval_gpt4_turbo/annotations.json
    python -m helpsteer_jax.rescore --benchmark=mt_bench \\
        --judgments=fastchat/llm_judge/data/mt_bench/model_judgment/gpt-4_single.jsonl

`--judgments` takes files or folders, comma-separated. Prints one line per model; with
`--output_dir` also writes `<output_dir>/<model>/eval_result.json` (the format that
`python -m helpsteer_jax.tables` reads). Files and folders may be local or bucket URLs. The readers
are documented in `helpsteer_jax/eval/rescore.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from helpsteer_jax import entry_point, storage
from helpsteer_jax.eval import rescore as r
from helpsteer_jax.eval.results import write_result

RESCORE_BENCHMARKS = ("arena_hard", "alpaca_eval", "mt_bench")


def rescore(
  benchmark: str,
  judgments: Sequence[str],
  answers: Sequence[str] = (),
  baseline: str = "",
  style_control: bool = False,
  difficulty_file: str = "",
  questions: str = "",
  rounds: int = 100,
  seed: int = 42,
  output_dir: str = "",
) -> list[dict[str, Any]]:
  """Result records, one per model, of the judgment files; written under `output_dir` if given."""
  _check_arguments(benchmark, judgments, answers, style_control, difficulty_file, questions)
  if benchmark == "arena_hard":
    results = r.rescore_arena_hard(judgments, answers, baseline or "gpt-4-0314", style_control, rounds, seed)
  elif benchmark == "alpaca_eval":
    results = r.rescore_alpaca_eval(judgments, difficulty_file, rounds, seed)
  else:
    results = r.rescore_mt_bench(judgments, questions, rounds, seed)
  if output_dir:
    for result in results:
      write_result(storage.join(output_dir, result["model"].replace(os.sep, "_")), result)
  return results


def _check_arguments(benchmark, judgments, answers, style_control, difficulty_file, questions) -> None:
  """Every argument error is raised here, before any file is read."""
  if benchmark not in RESCORE_BENCHMARKS:
    raise ValueError(f"--benchmark={benchmark!r}; expected one of {RESCORE_BENCHMARKS}")
  if not judgments:
    raise ValueError("--judgments is required: judgment files or folders, comma-separated")
  for path in list(judgments) + list(answers) + [p for p in (difficulty_file, questions) if p]:
    if not storage.exists(path):
      raise FileNotFoundError(f"{path}: no such file or folder")
  if style_control and benchmark != "arena_hard":
    raise ValueError("--style_control applies to arena_hard only")
  if style_control and not answers:
    raise ValueError("--style_control needs --answers: the answer files of the models and the baseline")


def _summary_line(result: dict[str, Any]) -> str:
  h = result["headline"]
  ci = "" if h["ci_low"] is None else f" (95% CI {h['ci_low']:.2f} to {h['ci_high']:.2f})"
  note = f"  [{h['note']}]" if h.get("note") else ""
  return f"{result['benchmark']} {result['model']}: {h['name']} = {h['value']:.2f}{ci}{note}"


def run():
  benchmark = flags.DEFINE_enum("benchmark", None, list(RESCORE_BENCHMARKS), "Benchmark of the files.")
  judgments = flags.DEFINE_list("judgments", None, "Judgment files or folders, comma-separated.")
  answers = flags.DEFINE_list("answers", [], "arena_hard style control: answer files or folders.")
  baseline = flags.DEFINE_string("baseline", "gpt-4-0314", "arena_hard: the baseline model.")
  style_control = flags.DEFINE_bool("style_control", False, "arena_hard: the style-controlled score.")
  difficulty_file = flags.DEFINE_string(
    "difficulty_file", "", "alpaca_eval: a local df_gamed.csv (default: the hub's, cached)."
  )
  questions = flags.DEFINE_string("questions", "", "mt_bench: the questions file (default: bundled/download).")
  rounds = flags.DEFINE_integer("bootstrap_rounds", 100, "Bootstrap rounds of the intervals.")
  seed = flags.DEFINE_integer("seed", 42, "Bootstrap seed.")
  output_dir = flags.DEFINE_string("output_dir", "", "Write <output_dir>/<model>/eval_result.json.")

  def main(argv):
    del argv
    if benchmark.value is None or not judgments.value:
      raise app.UsageError("--benchmark and --judgments are required")
    try:
      _check_arguments(
        benchmark.value, judgments.value, answers.value, style_control.value, difficulty_file.value, questions.value
      )
    except (ValueError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    results = rescore(
      benchmark.value,
      judgments.value,
      answers.value,
      baseline.value,
      style_control.value,
      difficulty_file.value,
      questions.value,
      rounds.value,
      seed.value,
      output_dir.value,
    )
    for result in results:
      print(_summary_line(result))
    if output_dir.value:
      print(f"{len(results)} results in {output_dir.value}")

  entry_point.run(main)


if __name__ == "__main__":
  run()
