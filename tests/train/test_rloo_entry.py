"""RLOO through the real entry point: the tiny policy raises a synthetic reward; the Edit-RM path
scores rollouts with a reward model folder; on a (2, 2, 2) mesh of 8 devices it matches one device."""

import json
import os
import pathlib
import sys

import numpy as np
import pytest

from helpsteer_jax.testing.subprocesses import run_entry

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def _env(devices: int = 1):
  return dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )


def _rows(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_rloo_raises_a_synthetic_reward(tmp_path, bundled_data, embedded_gguf_path):
  """Stated margin: the mean reward of steps 20-24 exceeds that of steps 1-5 by at least 0.2
  (reward = fraction of sampled tokens in the lower half of the vocabulary; random policy ~0.5)."""
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/edit_rloo.py:tiny",
    f"--workdir={tmp_path}",
    "--config.total_steps=24",
    "--config.progress=False",
    "--config.tensorboard=False",
  ]
  run_entry(cmd, cwd=REPO, env=_env(), timeout=900)
  rows = {r["step"]: r for r in _rows(tmp_path)}
  early = np.mean([rows[s]["reward_mean"] for s in range(1, 6)])
  late = np.mean([rows[s]["reward_mean"] for s in range(20, 25)])
  print(f"RLOO tiny: mean reward steps 1-5 {early:.3f} -> steps 20-24 {late:.3f}; KL at step 24 {rows[24]['kl']:.3f}")
  assert late - early >= 0.2
  for key in ("kl", "copy_rate", "response_length", "finished_fraction", "reward_std", "sample_s", "score_s"):
    assert key in rows[24]
  assert rows[24]["kl"] > 0  # the policy moved away from the frozen reference


def test_rloo_scores_with_an_edit_reward_model(tmp_path, bundled_data, embedded_gguf_path):
  from flax import nnx

  from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
  from helpsteer_jax.checkpoints.reward import save_reward_model
  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.heads import RewardModel

  rm = RewardModel(
    get_preset("tiny", vocab_size=49152, max_position_embeddings=4096), 1, rngs=nnx.Rngs(3)
  )  # edit requests: ~3k tokens
  save_reward_model(rm, tokenizer_from_gguf(embedded_gguf_path), str(tmp_path / "rm"), show_progress=False)
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/edit_rloo.py:tiny",
    f"--workdir={tmp_path / 'run'}",
    "--config.total_steps=2",
    "--config.progress=False",
    "--config.tensorboard=False",
    f"--config.rloo.reward_model={tmp_path / 'rm'}",
    "--config.rloo.synthetic_reward=",
    "--config.rloo.unfinished=penalize",
  ]
  run_entry(cmd, cwd=REPO, env=_env(), timeout=900)
  rows = _rows(tmp_path / "run")
  assert [r["step"] for r in rows] == [1, 2]
  # Nothing finishes in 16 tokens, so "penalize" gives every sample the penalty: no advantage.
  assert all(r["finished_fraction"] == 0.0 for r in rows)
  assert all(np.isfinite(r["reward_mean"]) and r["score_s"] > 0 for r in rows)


# A minute on 2 cores; test_rloo_multihost covers 8 devices (two processes of 4) in the default suite.
@pytest.mark.slow
def test_rloo_on_a_mesh_of_8_devices_matches_one_device(tmp_path, bundled_data, embedded_gguf_path):
  """Rollouts from the sharded policy, the sharded step: same rewards, KL and losses as one device."""
  runs = {}
  for devices, mesh in ((1, "1,1,1"), (8, "2,2,2")):
    cmd = [
      sys.executable,
      "-m",
      "helpsteer_jax.train",
      "--config=experiments/edit_rloo.py:tiny",
      f"--workdir={tmp_path / str(devices)}",
      "--config.total_steps=3",
      "--config.progress=False",
      "--config.tensorboard=False",
      f"--config.mesh.shape=({mesh})",
    ]
    run_entry(cmd, cwd=REPO, env=_env(devices), timeout=900)
    runs[devices] = _rows(tmp_path / str(devices))
  one, eight = runs[1], runs[8]
  assert [r["step"] for r in eight] == [1, 2, 3]
  for a, b in zip(one, eight):
    print(
      f"step {a['step']}: loss {a['loss']:.6f} vs {b['loss']:.6f}, reward {a['reward_mean']:.4f} "
      f"vs {b['reward_mean']:.4f}, kl {a['kl']:.6f} vs {b['kl']:.6f}"
    )
    assert a["reward_mean"] == b["reward_mean"] and a["response_length"] == b["response_length"]
    np.testing.assert_allclose([b["loss"], b["kl"]], [a["loss"], a["kl"]], rtol=1e-4, atol=1e-6)
