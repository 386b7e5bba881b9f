"""Training length in epochs: the steps are counted over the real rows after the length rules
(packing, dropped rows, each epoch's remainder) and equal what iteration yields; the run, its
schedule and its logs use that total; a recipe without its data plans from the published size."""

import json
import os
import pathlib
import sys

import pytest

from helpsteer_jax.data.pipeline import make_iterator
from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.train import run_length
from helpsteer_jax.train.config import default_train_config
from helpsteer_jax.train.model_setup import load_tokenizer_for

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chats(tmp_path_factory, embedded_gguf_path):
  """23 chats whose answers run from 1 to 45 words: some do not fit 64 tokens."""
  path = tmp_path_factory.mktemp("data") / "chats.jsonl"
  with open(path, "w") as f:
    for i in range(23):
      answer = " ".join(["word"] * (1 + 2 * i))
      messages = [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer}]
      f.write(json.dumps({"messages": messages}) + "\n")
  return path


def data_config(path, packing, drop_remainder, truncation="drop", epochs=0):
  config = default_train_config()
  config.data.dataset = "chat_messages"
  config.data.path = str(path)
  config.data.seq_len = 64
  config.data.batch_size = 3
  config.data.packing = packing
  config.data.drop_remainder = drop_remainder
  config.data.truncation = truncation
  config.data.num_epochs = epochs
  return config


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_counted_batches_are_the_batches_iteration_yields(chats, packing, drop_remainder):
  config = data_config(chats, packing, drop_remainder)
  tokenizer = load_tokenizer_for(config)
  counted = make_iterator(config.data, tokenizer, process_index=0, process_count=1).epoch_batches(3)
  for epochs in (1, 2, 3):  # a finite iterator of that many epochs yields their batches
    finite = data_config(chats, packing, drop_remainder, epochs=epochs)
    it = make_iterator(finite.data, tokenizer, process_index=0, process_count=1)
    assert sum(1 for _ in it) == sum(counted[:epochs]), f"epochs 0..{epochs - 1}"
  dropped = it.stats.as_dict().get("dropped_too_long", 0)
  assert dropped > 0, f"the length rule should drop some of these chats ({it.stats.summary()})"
  if not packing:  # one example per row: the kept examples in batches of 3
    kept = 23 - dropped // 3  # each of the 3 epochs encodes (and drops) them again
    per_epoch = kept // 3 if drop_remainder else -(-kept // 3)
    assert counted == [per_epoch] * 3


def test_total_steps_from_epochs_or_steps(chats):
  config = data_config(chats, packing=False, drop_remainder=True, truncation="left")
  tokenizer = load_tokenizer_for(config)
  it = make_iterator(config.data, tokenizer, process_index=0, process_count=1)
  config.total_steps = 1000
  assert run_length.total_steps(config, it) == 1000  # num_epochs = 0: the steps as stated
  config.num_epochs = 2
  assert run_length.total_steps(config, it) == 2 * (23 // 3)  # every chat kept, cut from the left
  assert it.stats.as_dict().get("truncated_left", 0) == 0, "counting must not touch the run's stats"
  config.num_epochs = 0
  config.total_steps = 0
  with pytest.raises(ValueError, match="total_steps=0"):
    run_length.total_steps(config, it)


def test_planned_steps_from_the_published_size():
  config = default_train_config()
  config.num_epochs = 2
  with pytest.raises(ValueError, match="expected_train_examples"):
    run_length.planned_total_steps(config, 128)
  config.expected_train_examples = 20_324
  assert run_length.planned_total_steps(config, 128) == 2 * 158  # each epoch's remainder dropped


@pytest.mark.entry
def test_a_run_by_epochs_trains_the_counted_steps(tmp_path, chats):
  """Through the entry point: 2 epochs of 23 chats in batches of 4 (tiny keeps each epoch's last
  partial batch) are 2 x 6 = 12 steps, whatever total_steps says; the log names the total and the
  schedule ends on it."""
  steps = 2 * -(-23 // 4)
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/chat_sft.py:tiny",
    f"--workdir={tmp_path / 'run'}",
    f"--config.data.path={chats}",
    "--config.data.seq_len=64",
    "--config.data.packing=False",
    "--config.data.truncation=left",
    "--config.data.batch_size=4",
    "--config.num_epochs=2",
    "--config.total_steps=1000",
    "--config.checkpoint_every=0",
    "--config.optim.warmup_steps=0",
    "--config.optim.schedule=linear",
    "--config.optim.final_lr_fraction=0.0",
    "--config.progress=False",
    "--config.tensorboard=False",
  ]
  env = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  }
  output = run_entry(cmd, cwd=REPO, env=env, timeout=600)
  assert f"run length: 2 epochs = {steps} steps" in output
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, steps + 1))
  # A linear decay to 0 over the counted steps: step s (1-based) ran at lr * (1 - (s - 1) / steps).
  lr = train[0]["learning_rate"]
  assert abs(train[-1]["learning_rate"] - lr / steps) < 1e-9
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [str(steps)]
