"""The checkout the tests run from: its experiments and launch scripts are what the entry-point
tests drive, so the package must be installed from it in place (`pip install -e`, as
scripts/setup_env.sh does)."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
if not (REPO / "experiments").is_dir():
  raise ImportError(
    f"helpsteer_jax.testing needs the package installed in place from a checkout; {REPO} has no experiments/ folder"
  )


def experiment_config(relative_path: str, arg: str | None = None) -> Any:
  """`get_config(arg)` of the experiment file `relative_path` (under experiments/)."""
  path = REPO / "experiments" / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  assert spec is not None and spec.loader is not None  # a .py path always gets a source-file loader
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def config_from_flag(flag: str) -> Any:
  """The config a `--config=experiments/PATH.py[:ARG]` flag names, built as the entry points do."""
  path, _, arg = flag[len("--config=") :].partition(":")
  if not path.startswith("experiments/"):
    raise ValueError(f"{flag}: expected --config=experiments/...")
  return experiment_config(path[len("experiments/") :], arg or None)
