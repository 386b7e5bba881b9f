"""launch/slurm_gpu.sbatch rehearsed inside a fake allocation (tests/launch/fakes/srun starts one process
per task on this machine with the variables SLURM sets): jax.distributed takes the coordinator
address, process count and rank from SLURM_*, and the tiny training runs as two processes."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKES = os.path.join(REPO, "tests", "launch", "fakes")


def _job_id_with_a_free_port() -> int:
  """jax puts the coordinator on port job_id % 4096 + 61440: a job id whose port is free here."""
  for job_id in range(os.getpid(), os.getpid() + 4096):
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", job_id % 4096 + 61440))
        return job_id
      except OSError:
        continue
  raise RuntimeError("no free port in jax's SLURM range")


def test_two_tasks_train_as_two_processes_from_the_slurm_variables(tmp_path, task_file):
  env = dict(
    os.environ,
    PATH=f"{FAKES}:{os.environ['PATH']}",
    PYTHON=sys.executable,
    JAX_PLATFORMS="cpu",
    HF_HUB_OFFLINE="1",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    SLURM_JOB_ID=str(_job_id_with_a_free_port()),
    SLURM_NTASKS="2",
    SLURM_NNODES="1",
    SLURM_SUBMIT_DIR=REPO,
  )
  workdir = tmp_path / "run"
  proc = subprocess.run(
    [
      "bash",
      "launch/slurm_gpu.sbatch",
      "train",
      "--config=experiments/chat_sft.py:tiny",
      f"--workdir={workdir}",
      f"--config.data.path={task_file}",
      "--config.data.seq_len=32",
      "--config.total_steps=2",
      "--config.progress=False",
      "--config.tensorboard=False",
    ],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-6000:]
  assert "from the slurm environment" in proc.stdout and "(2 processes)" in proc.stdout
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
