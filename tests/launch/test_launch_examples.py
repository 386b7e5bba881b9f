"""Every example in the launch scripts' usage text prints, in a dry run, a command whose config
builds: the experiment file exists, its size or variant is one it knows, and the scripts take the
README's `--config=experiments/<name>.py:<size>`. The local train example also runs for real."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from helpsteer_jax.testing.checkout import config_from_flag
from helpsteer_jax.testing.subprocesses import run_entry

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("local.sh", "slurm_submit.sh", "slurm_gpu.sbatch", "tpu_pod.sh", "sweep.sh")


def _examples(script: str) -> list[list[str]]:
  """The example invocations in a script's header comments, as argument lists."""
  out = []
  for line in open(os.path.join(REPO, "launch", script)):
    if not line.startswith("#"):
      break
    text = line.lstrip("#").strip()
    if "--config=experiments/" not in text:  # the synopsis line names --config=PATH[:ARG]
      continue
    words = shlex.split(text)
    words = [w for w in words if w not in ("sbatch", "bash") and not w.startswith("DRY_RUN=")]
    if words[0].startswith("--") and any(w.startswith("launch/") for w in words):
      # `sbatch --nodes=8 launch/slurm_gpu.sbatch ...`: sbatch options
      words = words[next(i for i, w in enumerate(words) if w.startswith("launch/")) :]
    out.append(words)
  return out


def _dry_run(words: list[str]) -> list[str]:
  env = dict(os.environ, PYTHON=sys.executable, DRY_RUN="1")
  proc = subprocess.run(["bash"] + words, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, f"{words}: {proc.stderr}"
  return shlex.split(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_usage_example_prints_a_command_whose_config_builds(script):
  examples = _examples(script)
  assert examples, f"launch/{script} shows no example"
  for words in examples:
    printed = _dry_run(words)
    remote = next((w for w in printed if w.startswith("--command=")), None)
    if remote is not None:  # the TPU pod: the command the workers run
      printed = shlex.split(remote.split("&&", 1)[1])
    configs = [w for w in printed if w.startswith("--config=")]
    assert len(configs) == 1, printed
    assert re.fullmatch(r"--config=experiments/[\w/]+\.py(:[\w=.,]+)?", configs[0]), configs[0]
    config = config_from_flag(configs[0])
    assert config is not None


def test_a_config_path_that_is_not_there_fails_before_printing():
  proc = subprocess.run(
    ["bash", "launch/local.sh", "--dry-run", "train", "--config=experiments/train/sft.py:tiny"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 2 and proc.stdout == ""
  assert "no experiment file experiments/train/sft.py" in proc.stderr


def test_the_local_train_example_runs_at_tiny_size(tmp_path, bundled_data, embedded_gguf_path):
  (words,) = [w for w in _examples("local.sh") if "train" in w and not any(x.startswith("--processes") for x in w)]
  words = [w for w in words if not w.startswith("--workdir=")]
  env = dict(os.environ, PYTHON=sys.executable, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("DRY_RUN", None)
  out = run_entry(
    ["bash"] + words + [f"--workdir={tmp_path / 'run'}", "--config.total_steps=2", "--config.checkpoint_every=2"],
    cwd=REPO,
    env=env,
    timeout=600,
  )
  assert (tmp_path / "run" / "metrics.jsonl").is_file(), out[-2000:]


def test_sweeps_list_every_grid_point_and_variant_and_each_builds():
  def commands(config):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
      ["bash", "launch/sweep.sh", "--dry-run", "local.sh", "scale", config, "--config.prompts.limit=2"],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.strip().splitlines()]

  grid = commands("--config=experiments/scaling/grid.py")
  assert len(grid) == 4 * 5 * 3 and len({c[3] for c in grid}) == 60
  assert grid[0][3].endswith("drafts=8,feedbacks=16,edits=1")  # the paper's best point first
  assert all(c[2] == "helpsteer_jax.scale" and c[4] == "--config.prompts.limit=2" for c in grid)
  ablations = commands("--config=experiments/scaling/ablations.py")
  assert len(ablations) == 9 and "policy=llama3.3_instruct" in ablations[-1][3]  # 7 variants, 2 main-table rows
  for command in grid[:3] + ablations:
    config_from_flag(command[3])
  single = subprocess.run(
    ["bash", "launch/sweep.sh", "--dry-run", "local.sh", "scale", "--config=experiments/feedback_sft.py"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, PYTHON=sys.executable),
  )
  assert single.returncode != 0 and "defines no get_sweep" in single.stderr


def test_a_slurm_job_array_runs_one_prompt_shard_per_task():
  config = "--config=experiments/scaling/smollm2_self_feedback_edit.py"
  submit = _dry_run(["launch/slurm_submit.sh", "--shards=4", "scale", config])
  assert "--array=0-3" in submit
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    DRY_RUN="1",
    SLURM_ARRAY_TASK_ID="6",
    SLURM_ARRAY_TASK_MIN="4",
    SLURM_ARRAY_TASK_COUNT="4",
  )
  proc = subprocess.run(
    ["bash", "launch/slurm_gpu.sbatch", "scale", config], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
  )
  assert proc.returncode == 0 and proc.stdout.strip().endswith("--config.prompts.shard=2/4"), proc.stderr
  # Only the search splits its prompts; a bad count stops before sbatch.
  for words, message in (
    (["--shards=2", "train", "--config=experiments/feedback_sft.py:tiny"], "not train"),
    (["--shards=0x", "scale", config], "expected a positive count"),
  ):
    proc = subprocess.run(
      ["bash", "launch/slurm_submit.sh", "--dry-run", *words], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and message in proc.stderr


def test_tpu_slices_each_take_a_shard():
  env = dict(os.environ, DRY_RUN="1")
  proc = subprocess.run(
    ["bash", "launch/tpu_pod.sh", "--tpu=s0,s1,s2", "--zone=z", "scale", "--config=experiments/scaling/grid.py"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  runs = [shlex.split(line) for line in proc.stdout.strip().splitlines() if "helpsteer_jax.scale" in line]
  assert len(runs) == 3  # each slice also gets the code copied and set up (test_launch_tpu_pod.py)
  for index, words in enumerate(runs):
    assert words[5] == f"s{index}" and f"--config.prompts.shard={index}/3" in words[-1]
  other = subprocess.run(
    ["bash", "launch/tpu_pod.sh", "--tpu=s0,s1", "--zone=z", "train", "--config=experiments/edit_sft.py:70b"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert other.returncode == 2 and "split the prompts of scale" in other.stderr
