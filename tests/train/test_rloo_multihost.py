"""RLOO over several hosts, rehearsed as two local processes of 4 fake CPU devices each, started
by launch/local.sh --processes=2 (coordinator on 127.0.0.1): every process samples the same rollouts SPMD on the global (2, 2, 2)
mesh and takes its devices' rows of the batch; the losses equal one process on 8 devices, step for
step."""

import json
import os
import sys

import numpy as np
import pytest

from helpsteer_jax.testing.subprocesses import run_entry, run_processes

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(devices: int) -> dict:
  return dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )


def _command(workdir, *extra):
  return [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/edit_rloo.py:tiny",
    f"--workdir={workdir}",
    "--config.total_steps=3",
    "--config.progress=False",
    "--config.tensorboard=False",
    "--config.mesh.shape=(2,2,2)",
    *extra,
  ]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_two_processes_train_as_one(tmp_path, bundled_data, embedded_gguf_path):
  run_entry(_command(tmp_path / "one"), cwd=REPO, env=_env(8), timeout=600)
  run_processes(_command(tmp_path / "two"), 2, cwd=REPO, env=_env(4), timeout=600)
  one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
  assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3]
  for a, b in zip(one, two):
    print(f"step {a['step']}: loss {a['loss']:.8f} vs {b['loss']:.8f}, kl {a['kl']:.8f} vs {b['kl']:.8f}")
    # The rollouts are the same tokens; sums over devices reduced across processes (gloo) may
    # round in another order than in one process.
    assert a["reward_mean"] == b["reward_mean"] and a["response_length"] == b["response_length"]
    np.testing.assert_allclose([b["loss"], b["kl"]], [a["loss"], a["kl"]], rtol=1e-5, atol=1e-7)
