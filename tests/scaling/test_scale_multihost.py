"""The search over several hosts, rehearsed as two local processes of 4 fake CPU devices each,
started by launch/local.sh --processes=2 (coordinator on 127.0.0.1): every process runs the same search SPMD on one mesh over all 8
devices, process 0 alone writes, and the records equal a one-process run's on 8 devices (floats
to 1e-6 relative: see `_diff`), under both schedules."""

import json
import os
import sys

import pytest

from helpsteer_jax.testing.search_runs import EXPERIMENT, write_prompts
from helpsteer_jax.testing.subprocesses import run_entry, run_processes

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(devices: int) -> dict:
  out = dict(os.environ)
  out.update(HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return out


def _command(model_dir, prompts, out, *extra):
  stages = [
    f"--config.search.{s}.{k}={v}"
    for s in ("draft", "feedback", "edit")
    for k, v in (("temperature", 1.0), ("max_new_tokens", 5))
  ]
  return [
    sys.executable,
    "-m",
    "helpsteer_jax.scale",
    f"--config={EXPERIMENT}",
    f"--config.policy.path={model_dir}",
    "--config.prompts.source=jsonl",
    f"--config.prompts.path={prompts}",
    "--config.prompts.limit=0",
    "--config.prompts_per_batch=2",
    "--config.mesh.shape=(1,1,-1)",
    f"--config.output_dir={out}",
    *stages,
    *extra,
  ]


def _records(folder):
  with open(os.path.join(folder, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def single(model_dir, tmp_path_factory):
  """Prompts and the pipelined search's folder in one process of 8 devices."""
  folder = tmp_path_factory.mktemp("single")
  prompts = folder / "prompts.jsonl"
  write_prompts(prompts, ["What is 2+2?", "Name a colour.", "Say hello."])
  run_entry(_command(model_dir, prompts, folder / "out"), cwd=REPO, env=_env(8), timeout=600)
  return prompts, folder / "out"


@pytest.mark.parametrize("schedule", ["pipelined", "staged"])
def test_two_processes_write_the_records_of_one(model_dir, single, schedule, tmp_path):
  prompts, single = single
  multi = tmp_path / "multi"
  run_processes(
    _command(model_dir, prompts, multi, f"--config.search.schedule={schedule}"), 2, cwd=REPO, env=_env(4), timeout=600
  )
  many, one = _records(multi), _records(single)
  assert len(many) == len(one) == 3
  diffs = [d for x, y in zip(many, one) for d in _diff(x, y)]
  assert not diffs, "\n".join(diffs[:40])
  with open(multi / "summary.json") as f, open(single / "summary.json") as g:
    a, b = json.load(f), json.load(g)
  assert a["token_multiple"] == b["token_multiple"] and a["num_prompts"] == 3


def _diff(a, b, path=""):
  """Where two records differ: every field equal, every float to 1e-6 relative. Scores come from
  the judge's logits, whose hidden states sum tensor-parallel partial products: reduced across
  processes (gloo) the sum's order differs from one process's, by ~1e-7 (texts and tokens are
  the same)."""
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      yield from _diff(a.get(k), b.get(k), f"{path}.{k}")
  elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    for i, (x, y) in enumerate(zip(a, b)):
      yield from _diff(x, y, f"{path}[{i}]")
  elif isinstance(a, float) and isinstance(b, float):
    if abs(a - b) > 1e-6 * max(abs(a), abs(b), 1.0):
      yield f"{path}: {a!r} vs {b!r}"
  elif a != b:
    yield f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}"
