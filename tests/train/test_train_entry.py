"""Training through the real entry point (`python -m helpsteer_jax.train`), in subprocesses:
a tiny model learns a synthetic chat task; kill -9 and resume gives the bit-identical run;
two jax.distributed processes give the losses of one process."""

import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.testing.train_runs import CODE_WORDS, env, losses, train_command

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_tiny_model_learns_a_chat_task(tmp_path, task_file):
  export = tmp_path / "export"
  cmd = train_command(
    tmp_path / "run",
    task_file,
    "--config.total_steps=80",
    "--config.optim.learning_rate=3e-3",
    "--config.data.batch_size=4",
    "--config.data.packing=False",
    "--config.checkpoint_every=0",
    f"--config.export_dir={export}",
  )
  run_entry(cmd, cwd=REPO, env=env(), timeout=600)
  curve = losses(tmp_path / "run")
  print(f"loss on the answer tokens: step 1 {curve[1]:.3f} -> step 80 {curve[80]:.4f}")
  assert curve[1] > 5.0 and curve[80] < 0.1

  import helpsteer_jax as hj

  model, tokenizer = hj.load_pretrained(str(export), show_progress=False)
  chats = [[{"role": "user", "content": f"Code word for {c}?"}] for c in CODE_WORDS]
  answers = [a[0].strip() for a in hj.generate(model, tokenizer, chats, max_new_tokens=8)]
  assert answers == list(CODE_WORDS.values())


def test_kill_9_then_resume_is_bit_identical(tmp_path, task_file):
  steps = [
    "--config.total_steps=12",
    "--config.checkpoint_every=3",
    "--config.data.batch_size=2",
    "--config.optim.learning_rate=1e-3",
  ]
  straight = tmp_path / "straight"
  run_entry(
    train_command(straight, task_file, *steps, f"--config.export_dir={straight}/export"),
    cwd=REPO,
    env=env(),
    timeout=600,
  )

  resumed = tmp_path / "resumed"
  kill_after = random.Random(os.getpid()).randint(4, 10)
  proc = subprocess.Popen(
    train_command(resumed, task_file, *steps, f"--config.export_dir={resumed}/export"),
    cwd=REPO,
    env=env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    metrics = resumed / "metrics.jsonl"
    if metrics.exists() and max(losses(resumed), default=0) >= kill_after:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not (resumed / "export").exists()
  run_entry(
    train_command(resumed, task_file, *steps, f"--config.export_dir={resumed}/export"), cwd=REPO, env=env(), timeout=600
  )

  a, b = losses(straight), losses(resumed)
  assert sorted(a) == sorted(b) == list(range(1, 13))
  assert [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]  # exact, not approximate
  from safetensors.numpy import load_file

  wa = load_file(str(straight / "export" / "model.safetensors"))
  wb = load_file(str(resumed / "export" / "model.safetensors"))
  assert wa.keys() == wb.keys()
  for name in wa:
    np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
  print(f"killed after step >= {kill_after}; resumed run identical over 12 steps and {len(wa)} tensors")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, task_file):
  """Preemption: SIGTERM mid-run finishes the step, checkpoints it, exits 0; a rerun resumes there."""
  run = tmp_path / "run"
  steps = ["--config.checkpoint_every=0", "--config.data.batch_size=2"]
  proc = subprocess.Popen(
    train_command(run, task_file, "--config.total_steps=500", *steps),
    cwd=REPO,
    env=env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if (run / "metrics.jsonl").exists() and max(losses(run), default=0) >= 3:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  output = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, output[-3000:]
  saved = sorted(int(d.name) for d in (run / "checkpoints").iterdir() if d.name.isdigit())
  assert len(saved) == 1 and 3 <= saved[0] < 500  # checkpoint_every=0: only the preemption's save
  assert f"preempted: checkpoint of step {saved[0]} written" in output
  assert max(losses(run)) == saved[0]  # no step ran after the one saved

  resumed = run_entry(
    train_command(run, task_file, f"--config.total_steps={saved[0] + 2}", *steps), cwd=REPO, env=env(), timeout=600
  )
  assert f"resume: latest checkpoint of this run, step {saved[0]}" in resumed
  print(f"SIGTERM after step {saved[0]}; resumed to step {max(losses(run))}")
  assert max(losses(run)) == saved[0] + 2


def test_eval_loop_on_a_mesh(tmp_path, task_file):
  """Held-out evaluation every 3 steps on a (1, 2, 2) mesh: eval rows at those steps, and the
  loss on the memorised task falls between them; held-out data that gives no batch is an error."""
  cmd = train_command(
    tmp_path / "run",
    task_file,
    "--config.total_steps=6",
    "--config.eval_every=3",
    "--config.optim.learning_rate=3e-3",
    "--config.optim.warmup_steps=0",
    "--config.data.batch_size=4",
    "--config.data.packing=False",
    "--config.checkpoint_every=0",
    "--config.eval_data.dataset=chat_messages",
    f"--config.eval_data.path={task_file}",
    "--config.eval_data.seq_len=32",
    "--config.eval_data.truncation=left",
    "--config.eval_data.batch_size=2",
    "--config.eval_data.packing=False",
    "--config.mesh.shape=(1,2,2)",
  )
  output = run_entry(cmd, cwd=REPO, env=env(devices=4), timeout=600)
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r for r in rows if r["split"] == "eval"}
  print(f"eval loss: step 3 {evals[3]['loss']:.3f}, step 6 {evals[6]['loss']:.3f}")
  assert sorted(evals) == [3, 6] and "eval at step 6" in output
  # 4 examples in 2 batches of 2: every answer token is counted once per evaluation.
  assert evals[3]["loss_weight"] == evals[6]["loss_weight"] > 0
  assert np.isfinite(evals[3]["loss"]) and evals[6]["loss"] < evals[3]["loss"]

  too_short = [c.replace("eval_data.truncation=left", "eval_data.truncation=drop") for c in cmd]
  too_short = [c.replace("--config.total_steps=6", "--config.total_steps=3") for c in too_short]
  too_short = [f"--workdir={tmp_path / 'bad'}" if c.startswith("--workdir") else c for c in too_short]
  with pytest.raises(AssertionError, match="held-out data gave no batch"):  # rows too long to keep
    run_entry(too_short, cwd=REPO, env=env(devices=4), timeout=600)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, task_file):
  common = [
    "--config.total_steps=4",
    "--config.checkpoint_every=2",
    "--config.data.batch_size=4",
    "--config.data.packing=False",
    "--config.mesh.shape=(1,-1,1)",
  ]
  single = tmp_path / "single"
  run_entry(train_command(single, task_file, *common), cwd=REPO, env=env(devices=1), timeout=600)
  port = _free_port()
  multi = tmp_path / "multi"
  procs = []
  for index in range(2):
    cmd = train_command(
      multi,
      task_file,
      *common,
      "--config.distributed.mode=explicit",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      "--config.distributed.num_processes=2",
      f"--config.distributed.process_id={index}",
    )
    procs.append(
      subprocess.Popen(cmd, cwd=REPO, env=env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    )
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "(2 processes)" in outputs[0] and "over 4 devices" in outputs[0]
  one, two = losses(single), losses(multi)
  print(f"losses one process {[round(one[s], 6) for s in sorted(one)]}, two {[round(two[s], 6) for s in sorted(two)]}")
  assert sorted(one) == sorted(two) == [1, 2, 3, 4]
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5)
  assert (multi / "checkpoints" / "4").is_dir()
