"""Every entry point answers `--help` with its own docstring and flags and exit code 0, and the
planner turns an impossible batch split into one line that names a mesh that works."""

import ast
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (
  "train",
  "scale",
  "evaluate",
  "convert",
  "plan",
  "tables",
  "chat",
  "annotate",
  "rescore",
  "sweep",
  "merge",
  "serve",
)
PACKAGES = ("train", "serve")  # entry points run as `python -m helpsteer_jax.<package>` (its __main__.py)


def _run(args, **env):
  full = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  full.update(env)
  return subprocess.run([sys.executable, "-m"] + args, cwd=REPO, env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero_with_the_commands_own_text(command):
  proc = _run([f"helpsteer_jax.{command}", "--help"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  # The docstring is read from the source: importing the entry modules here would define their
  # flags twice in this process.
  path = os.path.join(REPO, "helpsteer_jax", *([command, "__main__.py"] if command in PACKAGES else [f"{command}.py"]))
  first_line = ast.get_docstring(ast.parse(open(path).read())).strip().splitlines()[0]
  assert first_line in proc.stdout
  assert "--" in proc.stdout.split(first_line, 1)[1]  # its flags follow


def test_plan_names_the_axis_and_a_mesh_for_a_batch_that_does_not_split():
  proc = _run(["helpsteer_jax.plan", "--config=experiments/feedback_sft.py:tiny", "--mesh=1,8,1"])
  assert proc.returncode == 1
  (line,) = proc.stderr.strip().splitlines()
  assert line == (
    "error: the global batch of 4 rows does not split over the mesh axes data x fsdp = 1 x 8 = 8; "
    "on 8 devices use e.g. --mesh=1,4,2 (the rest on tensor), or a batch size that is a "
    "multiple of 8"
  )
