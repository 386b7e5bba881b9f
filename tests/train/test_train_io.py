"""The training loop's outputs and start-up, piece by piece: metrics as JSON lines and TensorBoard
events, Orbax checkpoints that keep the last N with the data position, and the multi-host start
for each way processes are launched (jax's own initialize replaced by a recorder)."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.parallel import distributed
from helpsteer_jax.train.checkpointing import Checkpointer
from helpsteer_jax.train.metrics_writer import MetricsWriter, read_metrics


def test_metrics_jsonl_and_tensorboard(tmp_path):
  writer = MetricsWriter(tmp_path)
  writer.write(1, {"loss": 2.5, "grad_norm": float("nan")})
  writer.write(2, {"loss": 2.0})
  writer.write(2, {"loss": 1.9}, split="eval")
  writer.write(3, {"loss": 1.5})
  writer.close()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[0] == {"step": 1, "split": "train", "loss": 2.5, "grad_norm": "nan"}  # valid JSON
  assert [r["loss"] for r in read_metrics(tmp_path, "eval")] == [1.9]
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  raw = events[0].read_bytes()
  assert b"train/loss" in raw and b"eval/loss" in raw

  # A resumed run drops the lines of work it will redo.
  MetricsWriter(tmp_path, tensorboard=False).truncate_after(2)
  assert [(r["step"], r["split"]) for r in read_metrics(tmp_path, None)] == [(1, "train"), (2, "train"), (2, "eval")]


def test_disabled_writer_writes_nothing(tmp_path):  # every process but 0
  writer = MetricsWriter(tmp_path / "other", enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "other").exists()


def test_checkpoints_keep_the_last_n_with_the_data_position(tmp_path):
  state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.asarray(0, jnp.int32)}
  checkpointer = Checkpointer(tmp_path / "ckpt", max_to_keep=2, asynchronous=True)
  for step in range(1, 6):
    state = jax.tree.map(lambda x: x + 1, state)
    checkpointer.save(step, state, {"epoch": 0, "position": 10 * step, "seed": 0, "num_examples": 99})
  checkpointer.wait()
  assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == [4, 5]
  assert checkpointer.latest_step() == 5
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored, position, step = checkpointer.restore(abstract)
  checkpointer.close()
  assert step == 5 and position["position"] == 50
  np.testing.assert_array_equal(restored["params"]["w"], np.arange(6.0).reshape(2, 3) + 5)
  assert int(restored["step"]) == 5


@pytest.fixture
def recorder(monkeypatch):
  """Replaces the jax that `distributed` calls with one that records initialize's arguments."""
  calls, options = [], {}
  fake = types.SimpleNamespace(
    distributed=types.SimpleNamespace(initialize=lambda **kw: calls.append(kw)),
    config=types.SimpleNamespace(update=lambda name, value: options.__setitem__(name, value)),
  )
  monkeypatch.setattr(distributed, "jax", fake)
  for name in (
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "HELPSTEER_COORDINATOR",
    "HELPSTEER_NUM_PROCESSES",
    "HELPSTEER_PROCESS_ID",
  ):
    monkeypatch.delenv(name, raising=False)
  return calls, options


def test_auto_start_reads_slurm_and_tpu_environments(recorder, monkeypatch):
  calls, options = recorder
  assert distributed.initialize(distributed.DistributedSettings("auto")) == "none" and calls == []
  monkeypatch.setenv("SLURM_JOB_ID", "123")
  monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job is a single process
  assert distributed.initialize(distributed.DistributedSettings("auto")) == "none" and calls == []
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert distributed.initialize(distributed.DistributedSettings("auto")) == "slurm"
  assert calls == [{}]  # jax reads SLURM_* itself
  assert options == {"jax_cpu_collectives_implementation": "gloo"}
  monkeypatch.delenv("SLURM_JOB_ID")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1,w2,w3")
  assert distributed.initialize(distributed.DistributedSettings("auto")) == "tpu" and calls == [{}, {}]


def test_explicit_start_from_config_or_environment(recorder, monkeypatch):
  calls, _ = recorder
  settings = distributed.settings_from_config(
    {"mode": "explicit", "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
  )
  assert distributed.initialize(settings) == "explicit"
  assert calls[-1] == {
    "coordinator_address": "10.0.0.1:1234",
    "num_processes": 4,
    "process_id": 2,
    "local_device_ids": None,
  }
  monkeypatch.setenv("HELPSTEER_COORDINATOR", "host:99")
  monkeypatch.setenv("HELPSTEER_NUM_PROCESSES", "2")
  monkeypatch.setenv("HELPSTEER_PROCESS_ID", "1")
  # The config's "unset" spellings ('' / 0 / -1) fall through to the variables.
  settings = distributed.settings_from_config(
    {"mode": "explicit", "coordinator_address": "", "num_processes": 0, "process_id": -1}
  )
  distributed.initialize(settings)
  assert calls[-1]["coordinator_address"] == "host:99" and calls[-1]["process_id"] == 1


def test_start_errors_name_what_is_wrong(recorder):
  calls, _ = recorder
  with pytest.raises(ValueError, match="expected one of"):
    distributed.initialize(distributed.DistributedSettings("mpi"))
  with pytest.raises(RuntimeError, match="SLURM_JOB_ID"):
    distributed.initialize(distributed.DistributedSettings("slurm"))
  with pytest.raises(RuntimeError, match="TPU_WORKER_HOSTNAMES"):
    distributed.initialize(distributed.DistributedSettings("tpu"))
  with pytest.raises(ValueError, match="coordinator_address"):
    distributed.initialize(distributed.DistributedSettings("explicit", num_processes=2, process_id=0))
  with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
    distributed.initialize(distributed.DistributedSettings("explicit", "h:1", num_processes=2, process_id=2))
  assert calls == []


def test_the_resolved_config_goes_to_tensorboard_as_hyperparameters(tmp_path):
  from helpsteer_jax.train.run_record import flat_hparams

  hparams = flat_hparams(
    {"optim": {"learning_rate": 1e-5, "b1": 0.9}, "mesh": {"shape": [1, -1, 1]}, "name": "x", "resume_from": None}
  )
  assert hparams == {
    "optim/learning_rate": 1e-5,
    "optim/b1": 0.9,
    "mesh/shape": "[1, -1, 1]",
    "name": "x",
    "resume_from": "null",
  }
  writer = MetricsWriter(tmp_path, tensorboard=True)
  writer.write_hparams(hparams, json.dumps({"name": "x"}))
  writer.close()
  events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
  assert b"hparams" in events and b"optim/learning_rate" in events


def test_tokens_per_second_counts_real_tokens_from_the_masks():
  from helpsteer_jax.train.task_base import TaskBase

  task = TaskBase(None)
  pairs = {
    "chosen_input_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool),
    "rejected_input_mask": np.array([[1, 0, 0, 0], [1, 1, 1, 1]], bool),
    "label_magnitude": np.ones(2, np.float32),
  }
  assert task.num_tokens(pairs) == 5 + 5
  packed = {"input_ids": np.ones((2, 5), np.int32), "segment_ids": np.array([[1, 1, 2, 0, 0], [1, 1, 1, 1, 1]])}
  assert task.num_tokens(packed) == 8
  batch, extra, tokens = task.prepare_batch(packed, None, None, None, 0, to_global=lambda x: x)
  assert batch is packed and extra == {} and tokens == 8 * jax.process_count()
  with pytest.raises(KeyError, match="no mask to count tokens from"):
    task.num_tokens({"input_ids": np.ones((1, 2))})
