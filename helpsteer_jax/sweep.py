"""Lists the points of an experiment's sweep, one config argument per line:

    python -m helpsteer_jax.sweep --config=experiments/scaling/grid.py:size=smollm2

The experiment file defines `get_sweep(arg) -> list[str]`, each entry an argument its own
`get_config` takes; every point's config is built here before anything is printed, so a sweep
that lists a broken point fails at once. launch/sweep.sh runs each point through a launcher.
"""

from __future__ import annotations

import importlib.util
import os

from absl import app, flags

from helpsteer_jax import entry_point

_CONFIG = flags.DEFINE_string("config", None, "Experiment file with get_sweep, as PATH[:ARG].")


def sweep_points(config_arg: str) -> tuple[str, list[str]]:
  """(experiment path, config arguments of every point) of `PATH[:ARG]`."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no experiment file")
  spec = importlib.util.spec_from_file_location("experiment", path)
  if spec is None or spec.loader is None:  # a name Python cannot import (not a .py file)
    raise ValueError(f"{path}: not a Python experiment file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg); it is a single experiment")
  points = list(module.get_sweep(arg or None))
  for point in points:
    module.get_config(point)  # every point builds, or the sweep is refused
  return path, points


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments {argv[1:]}; flags are --name=value")
  if not _CONFIG.value:
    raise app.UsageError("--config=experiments/<sweep>.py[:arg] is required")
  try:
    path, points = sweep_points(_CONFIG.value)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  for point in points:
    print(f"{path}:{point}")


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
