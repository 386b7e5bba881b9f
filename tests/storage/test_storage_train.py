"""Training with its workdir and export in a bucket (a GCS emulator on 127.0.0.1): kill -9 in the
middle, resume from the bucket's checkpoints, and get the run and the export of a local run."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from helpsteer_jax import storage
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.storage.object_log import log_exists
from helpsteer_jax.testing.checkout import REPO
from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.testing.train_runs import env, losses, train_command

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

STEPS = [
  "--config.total_steps=12",
  "--config.checkpoint_every=3",
  "--config.data.batch_size=2",
  "--config.optim.learning_rate=1e-3",
]


def bucket_losses(workdir: str) -> dict[int, float]:
  path = storage.join(workdir, "metrics.jsonl")
  if not log_exists(path):
    return {}
  rows = [json.loads(line) for line in read_text(path).splitlines() if line.strip()]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_a_run_in_a_bucket_resumes_after_kill_9_to_the_local_result(tmp_path, gcs_bucket, task_file):
  local = tmp_path / "local"
  run_entry(
    train_command(local, task_file, *STEPS, f"--config.export_dir={local}/export"), cwd=REPO, env=env(), timeout=600
  )

  run = storage.join(gcs_bucket, "runs", "sft")
  export = storage.join(run, "export")
  command = train_command(run, task_file, *STEPS, f"--config.export_dir={export}")
  # The bucket run starts in an empty folder (so a stray local `gs:` folder would show) and writes
  # TensorBoard events into the bucket too.
  command = [
    arg.replace("=experiments/", f"={REPO}/experiments/") for arg in command if arg != "--config.tensorboard=False"
  ]
  proc = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if max(bucket_losses(run), default=0) >= 4:  # a checkpoint (step 3) is in the bucket
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.2)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not storage.exists(export)
  run_entry(command, cwd=tmp_path, env=env(), timeout=600)

  a, b = losses(local), bucket_losses(run)
  assert sorted(b) == list(range(1, 13))
  assert [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]  # exact
  # The finished run compacted its metrics into one object (numbered on from the killed run's).
  assert len(storage.listdir(storage.join(run, "metrics.jsonl.parts"))) == 1
  assert storage.listdir(storage.join(run, "tensorboard"))
  assert not (tmp_path / "gs:").exists()

  from safetensors.numpy import load

  local_weights = load((local / "export" / "model.safetensors").read_bytes())
  bucket_weights = load(storage.read_bytes(storage.join(export, "model.safetensors")))
  assert local_weights.keys() == bucket_weights.keys()
  for name in local_weights:
    np.testing.assert_array_equal(local_weights[name], bucket_weights[name], err_msg=name)
  assert json.loads(storage.read_text(storage.join(export, "config.json")))["architectures"]
  assert storage.is_file(storage.join(export, "tokenizer.json"))
