"""RLOO's memory per device: the byte counts by hand for the 70B recipe, the rollout slots it
chooses, and `plan --config=experiments/edit_rloo.py:size=70b` through its entry point."""

import importlib.util
import os
import subprocess
import sys

import pytest

from helpsteer_jax.parallel.device_memory import GIB
from helpsteer_jax.train.rloo_plan import SAMPLER_SLOTS, plan_rloo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  spec = importlib.util.spec_from_file_location("edit_rloo", os.path.join(REPO, "experiments", "edit_rloo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("size=70b")


def test_70b_bytes_by_hand():
  config = _config()
  plan = plan_rloo(config, devices=32, hbm_bytes=80 * GIB, memory_fraction=0.9)
  params = 70_553_706_496  # Llama-3-70B
  assert plan.mesh == (1, 32, 1)
  # fp32 parameters and two fp32 Adam moments, over 32 fsdp shards (a few scalars besides).
  assert abs(plan.state - params * 12 // 32) < 1024
  assert plan.gradients == plan.reference == params * 4 // 32
  # 80 layers x 8 KV heads (no tensor split) x 128 x (3,072 prompt + 2,048 new) positions, bf16.
  assert plan.rollout_length == 5120 and plan.kv_per_slot == 2 * 80 * 8 * 128 * 5120 * 2
  left = int(80 * GIB * 0.9) - plan.state - plan.gradients - plan.reference - plan.reward_model
  assert plan.slots == min(128, SAMPLER_SLOTS, left // plan.kv_per_slot) and plan.rollouts == 128
  assert plan.resident <= plan.budget


@pytest.mark.entry
def test_plan_entry_prints_both_clusters():
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
  out = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.plan", "--config=experiments/edit_rloo.py:size=70b"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "v5p-64:" in out.stdout and "4x8xH100-80GB:" in out.stdout
  assert out.stdout.count("rollout cache:") == 2 and "does NOT fit" not in out.stdout
