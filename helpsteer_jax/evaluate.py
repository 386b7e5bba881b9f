"""Benchmark evaluation: Arena-Hard v0.1, MT-Bench or AlpacaEval 2 for one model.

    python -m helpsteer_jax.evaluate --config=experiments/eval/arena_hard.py:tiny
    python -m helpsteer_jax.evaluate --config=experiments/eval/mt_bench.py \\
        --config.model.path=checkpoints/Llama-3.3-70B-Instruct --workdir=outputs/eval/mt_bench/llama70b

Answers come from a local model (generated with the project's sampler) or an existing answer
file; judgments from an OpenAI-compatible HTTP endpoint or a local model. Answers and judgments
are appended to files in the workdir as they are made, so an interrupted run loses nothing and a
rerun resumes; `eval_result.json` is what `python -m helpsteer_jax.tables` reads. A rerun into a
workdir holding another model's answers (or other sampling values, another question file) is
refused before any model loads, naming each differing field; `--config.resume=force` continues.
"""

from __future__ import annotations

from typing import Any, Optional

from absl import app, flags
from ml_collections import ConfigDict, config_flags

from helpsteer_jax import entry_point
from helpsteer_jax.eval.config import check_config
from helpsteer_jax.eval.mt_bench import table_markdown
from helpsteer_jax.eval.runner import run_evaluation


def evaluate(config: ConfigDict, workdir: Optional[str] = None) -> dict[str, Any]:
  """Runs (or resumes) the evaluation; returns the result record (also in `eval_result.json`)."""
  return run_evaluation(config, workdir)


def _define_flags():
  # Flags are defined when the command runs, not at import, so importing this module (tests,
  # notebooks, other entry points in the same process) registers nothing globally.
  config = config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Output folder (default: config.output_dir).")
  return config, workdir


def _summary_lines(result: dict[str, Any]) -> list[str]:
  h = result["headline"]
  ci = "" if h["ci_low"] is None else f" (95% CI {h['ci_low']:.2f} to {h['ci_high']:.2f})"
  lines = [
    f"{result['benchmark']} {result['model']}: {h['name']} = {h['value']:.2f}{ci}",
    f"judge: {result['judge']}; questions: {result['counts']['questions']}, "
    f"judged: {result['counts']['judged']}, failed: {result['counts']['failed']}",
  ]
  if result["benchmark"] == "mt_bench":
    lines.append(table_markdown(result["metrics"]["categories"]))
  return lines


def run():
  config_flag, workdir_flag = _define_flags()

  def main(argv):
    del argv
    if config_flag.value is None:
      raise app.UsageError("--config is required, e.g. --config=experiments/eval/arena_hard.py:tiny")
    config = config_flag.value
    check_config(config)  # before the processes of a multi-host run wait for each other
    if "distributed" in config:
      from helpsteer_jax.parallel.distributed import initialize, settings_from_config

      initialize(settings_from_config(config.distributed))
    result = evaluate(config, workdir_flag.value)
    if "skipped" in result:  # a non-zero process of a multi-process run
      return
    print("\n".join(_summary_lines(result)))
    print(f"results in {workdir_flag.value or config.output_dir}")

  entry_point.run(main)


if __name__ == "__main__":
  run()
