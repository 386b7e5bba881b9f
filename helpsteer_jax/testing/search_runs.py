"""The search's entry point at tiny size: a prompts file, the demo experiment made small (sampled
stages of a few tokens), and the records a run wrote."""

from __future__ import annotations

import json
import pathlib
import sys

from helpsteer_jax.testing.checkout import REPO, experiment_config

EXPERIMENT = REPO / "experiments" / "scaling" / "smollm2_self_feedback_edit.py"


def write_prompts(path, prompts: list[str]) -> None:
  """A jsonl prompts file with ids q0, q1, ..."""
  pathlib.Path(path).write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))


def search_config(model_dir: str, prompts_path, out_dir, max_new_tokens: int = 5, prompts_per_batch: int | None = 2):
  """The demo experiment on `model_dir` and a jsonl prompts file, every stage sampled at
  temperature 1 for `max_new_tokens` tokens; `prompts_per_batch` None keeps the experiment's."""
  from helpsteer_jax.scaling.config import stage

  config = experiment_config(str(EXPERIMENT.relative_to(REPO / "experiments")))
  config.policy.path = model_dir
  config.prompts.source = "jsonl"
  config.prompts.path = str(prompts_path)
  config.prompts.limit = 0
  if prompts_per_batch is not None:
    config.prompts_per_batch = prompts_per_batch
  for name in ("draft", "feedback", "edit"):
    config.search[name] = stage(temperature=1.0, max_new_tokens=max_new_tokens)
  config.output_dir = str(out_dir)
  return config


def records_by_id(out) -> dict[str, dict]:
  return {r["id"]: r for r in map(json.loads, (pathlib.Path(out) / "results.jsonl").read_text().splitlines())}


def one_at_a_time_command(model_dir, prompts, out) -> list[str]:
  """`python -m helpsteer_jax.scale` on `prompts`, one prompt at a time, sampled stages of 5 tokens."""
  args = [
    sys.executable,
    "-m",
    "helpsteer_jax.scale",
    f"--config={EXPERIMENT}",
    f"--config.policy.path={model_dir}",
    "--config.prompts.source=jsonl",
    f"--config.prompts.path={prompts}",
    "--config.prompts.limit=0",
    "--config.prompts_per_batch=1",
    "--config.prompts_in_flight=1",
    f"--config.output_dir={out}",
  ]
  for name in ("draft", "feedback", "edit"):
    args += [f"--config.search.{name}.temperature=1.0", f"--config.search.{name}.max_new_tokens=5"]
  return args
