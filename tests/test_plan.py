"""The ahead-of-time planner through its entry point (`python -m helpsteer_jax.plan`): a 70B SFT
step compiled for 64 fake devices from shapes alone, with the memory and FLOPs it prints."""

import os
import pathlib
import re
import sys

import pytest

from helpsteer_jax.testing.subprocesses import run_entry

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env() -> dict:
  # The planner makes its own fake devices; an inherited device count must not fix it first.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
  return env


def test_plans_70b_sft_on_64_devices_of_80_gb():
  """docs/70b.md's row (1, 8, 8) with 16 accumulation steps: fits in 80 GB, ~36 GiB per device."""
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.plan",
    "--config=experiments/feedback_sft.py:size=70b",
    "--mesh=1,8,8",
    "--devices=64",
    "--device_memory_gb=80",
    "--peak_tflops=989",
    "--config.grad_accum_steps=16",
  ]
  out = run_entry(cmd, cwd=REPO, env=_env(), timeout=900)
  print(out[-800:])
  assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 8} (64 devices)" in out
  assert re.search(r"parameters: 70\.55 B; tokens per step: 524,288", out)
  memory = float(re.search(r"memory per device: ([\d.]+) GiB", out).group(1))
  assert 25.0 < memory < 60.0
  flops = float(re.search(r"FLOPs per step: ([\d.e+]+)", out).group(1))
  assert 2.0e17 < flops < 2.5e17  # 6 N + attention per token, 524k tokens
  assert "fits in 80 GB per device: yes" in out


def test_plan_rejects_a_mesh_that_does_not_divide_the_devices():
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.plan",
    "--config=experiments/feedback_sft.py:tiny",
    "--mesh=1,3,1",
    "--devices=8",
  ]
  try:
    run_entry(cmd, cwd=REPO, env=_env(), timeout=300)
  except AssertionError as e:
    assert "mesh" in str(e).lower() and "8" in str(e)
  else:
    raise AssertionError("a (1, 3, 1) mesh over 8 devices was accepted")


def test_plan_refuses_a_mesh_that_does_not_split_the_global_batch_before_compiling():
  """256 devices all on fsdp cannot split 128 rows; the planner says so at once."""
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.plan",
    "--config=experiments/edit_sft.py:size=70b",
    "--mesh=1,256,1",
    "--devices=256",
  ]
  try:
    run_entry(cmd, cwd=REPO, env=_env(), timeout=300)
  except AssertionError as e:
    assert (
      "the global batch of 128 rows does not split over the mesh axes data x fsdp = 1 x 256 = 256; "
      "on 256 devices use e.g. --mesh=1,128,2"
    ) in str(e)
  else:
    raise AssertionError("a (1, 256, 1) mesh was accepted for a global batch of 128")
