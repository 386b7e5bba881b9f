"""The launch scripts in dry-run mode: each prints exactly the command it would run."""

import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "--config=experiments/eval/arena_hard.py:full,label=base"


def _run(args, env=None):
  full_env = dict(os.environ, PYTHON="python3", **(env or {}))
  full_env.pop("DRY_RUN", None)
  full_env.update(env or {})
  return subprocess.run(["bash"] + args, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60)


def _last_command(proc):
  assert proc.returncode == 0, proc.stderr
  return shlex.split(proc.stdout.strip().splitlines()[-1])


@pytest.mark.entry
@pytest.mark.parametrize("module", ["train", "scale", "evaluate"])
def test_local(module):
  proc = _run(["launch/local.sh", "--dry-run", module, CONFIG, "--config.judge.base_url=http://h:1/v1 x"])
  assert proc.stdout.splitlines()[0] == f"cd {REPO}"
  assert _last_command(proc) == [
    "python3",
    "-m",
    f"helpsteer_jax.{module}",
    CONFIG,
    "--config.judge.base_url=http://h:1/v1 x",
  ]


@pytest.mark.entry
def test_local_dry_run_from_the_environment_and_bad_module():
  assert _last_command(_run(["launch/local.sh", "evaluate", CONFIG], {"DRY_RUN": "1"}))[:3] == [
    "python3",
    "-m",
    "helpsteer_jax.evaluate",
  ]
  bad = _run(["launch/local.sh", "--dry-run", "trian", CONFIG])
  assert bad.returncode != 0 and "not one of" in bad.stderr


@pytest.mark.entry
def test_tpu_pod_needs_a_tpu_name():
  missing = _run(["launch/tpu_pod.sh", "--dry-run", "--zone=z", "evaluate", CONFIG], {"TPU_NAME": ""})
  assert missing.returncode != 0 and "--tpu" in missing.stderr


@pytest.mark.entry
def test_slurm_sbatch_and_submit():
  srun = _last_command(_run(["launch/slurm_gpu.sbatch", "evaluate", CONFIG], {"DRY_RUN": "1"}))
  assert srun[0] == "srun" and srun[-4:] == ["python3", "-m", "helpsteer_jax.evaluate", CONFIG]
  per_node = _last_command(_run(["launch/slurm_submit.sh", "--dry-run", "--nodes=2", "train", CONFIG]))
  assert per_node[0] == "sbatch" and "--nodes=2" in per_node and "--ntasks-per-node=1" in per_node
  assert per_node[-3:] == [os.path.join(REPO, "launch", "slurm_gpu.sbatch"), "train", CONFIG]
  per_gpu = _last_command(
    _run(["launch/slurm_submit.sh", "--per-gpu", "--partition=gpu", "scale", CONFIG], {"DRY_RUN": "1"})
  )
  assert "--ntasks-per-node=8" in per_gpu and "--gpus-per-task=1" in per_gpu and "--partition=gpu" in per_gpu


def test_no_hyperparameters_in_the_scripts():
  for name in ("local.sh", "tpu_pod.sh", "slurm_gpu.sbatch", "slurm_submit.sh", "common.sh"):
    text = open(os.path.join(REPO, "launch", name)).read()
    for word in ("learning_rate", "batch_size", "num_drafts", "max_new_tokens", "temperature"):
      assert word not in text, f"launch/{name} mentions {word}"
