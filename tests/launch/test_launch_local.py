"""launch/local.sh --processes=2: the local rehearsal of a cluster run. The multi-host tests run
their processes through it (helpsteer_jax.testing.subprocesses.run_processes: the tiny RLOO in test_rloo_multihost,
the search in test_scale_multihost, each to the results of one process); here, its options and a
failed process."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_failed_process_fails_the_launch(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [
      "bash",
      "launch/local.sh",
      "--processes=2",
      "train",
      "--config=experiments/chat_sft.py:tiny",
      f"--workdir={tmp_path}",
      "--config.total_steps=-3",
    ],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert "[local] a process exited with code" in proc.stdout


def test_devices_per_process_and_the_dry_run(tmp_path):
  proc = subprocess.run(
    [
      "bash",
      "launch/local.sh",
      "--dry-run",
      "--processes=3",
      "--port=12345",
      "--devices_per_process=2",
      "plan",
      "--config=experiments/edit_sft.py:70b",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()[1:]
  assert len(lines) == 3 and all("HELPSTEER_COORDINATOR=127.0.0.1:12345" in line for line in lines)
  assert [f"HELPSTEER_PROCESS_ID={i}" in line for i, line in enumerate(lines)] == [True] * 3
  bad = subprocess.run(
    ["bash", "launch/local.sh", "--processes=0", "plan", "--config=experiments/edit_sft.py:70b"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert bad.returncode == 2 and "expected a positive count" in bad.stderr
