"""Faults of the trainer, through `train.tasks.run_training` (what `python -m helpsteer_jax.train`
calls) at the tiny size on the 8 fake CPU devices: a resume that would change results is refused
before any model loads (and `resume=force` continues); a checkpoint that does not fit the model
is a config mismatch, not damage; a failed background save stops the run at once naming the step;
optimizer values no run can train with fail before anything is built; a failed export names its
folder. One finished run (4 steps) is made once and copied for each resume."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import pytest
from ml_collections import ConfigDict

from helpsteer_jax.data.run_identity import IDENTITY_FILE, RunMismatch
from helpsteer_jax.testing.train_runs import losses, write_task
from helpsteer_jax.train.checkpointing import CORRUPT_DIR, Checkpointer, CheckpointMismatch, CheckpointSaveError
from helpsteer_jax.train.optimizer import OptimizerConfigError

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 4


def tiny_config(data: pathlib.Path, **changes) -> ConfigDict:
  """experiments/chat_sft.py:tiny on the code-word rows: 8 rows of 32 tokens a step (one per fake
  device), 4 steps, a checkpoint every 2; `changes` by dotted name."""
  spec = importlib.util.spec_from_file_location("chat_sft", REPO / "experiments" / "chat_sft.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny").unlock()
  values = {
    "data.path": str(data),
    "data.seq_len": 32,
    "data.batch_size": 8,
    "total_steps": STEPS,
    "checkpoint_every": 2,
    "progress": False,
    "tensorboard": False,
  }
  values.update(changes)
  for name, value in values.items():
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def train(config: ConfigDict, workdir: pathlib.Path):
  from helpsteer_jax.train.tasks import run_training

  return run_training(config, str(workdir))


@pytest.fixture(scope="module")
def task_file(tmp_path_factory, embedded_gguf_path) -> pathlib.Path:  # the tokenizer is SmolLM2's
  path = tmp_path_factory.mktemp("data") / "code_words.jsonl"
  write_task(path)
  return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, task_file) -> pathlib.Path:
  """A workdir whose run finished all its steps (checkpoints at steps 2 and 4)."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  result = train(tiny_config(task_file), workdir)
  assert result.step == STEPS and (workdir / IDENTITY_FILE).is_file()
  return workdir


@pytest.fixture
def copied_run(finished_run, tmp_path) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  return workdir


@pytest.fixture
def no_model(monkeypatch):
  """Any model build fails the test: what it guards must be refused before one loads."""
  from helpsteer_jax.train import model_setup

  def refuse(*args, **kwargs):
    raise AssertionError("a model was built")

  monkeypatch.setattr(model_setup, "build_policy", refuse)


# -- the workdir's identity -------------------------------------------------------------------------


def test_a_resume_with_another_batch_size_and_learning_rate_is_refused_before_the_model_loads(
  copied_run, task_file, no_model, caplog
):
  config_json = (copied_run / "config.json").read_bytes()
  identity_json = (copied_run / IDENTITY_FILE).read_bytes()
  changed = tiny_config(
    task_file, **{"data.batch_size": 16, "optim.learning_rate": 3e-3, "total_steps": 6, "checkpoint_every": 3}
  )
  with caplog.at_level(logging.INFO), pytest.raises(RunMismatch) as info:
    train(changed, copied_run)
  message = str(info.value)
  recorded = copied_run / IDENTITY_FILE
  assert "differs from this one in 2 fields that change results" in message
  assert f"data.batch_size: 8 in {recorded}, 16 now" in message
  assert f"optim.learning_rate: 0.001 in {recorded}, 0.003 now" in message
  assert "--config.resume=force" in message
  assert "total_steps" not in message and "checkpoint_every" not in message
  assert "total_steps: 4 in the run on disk, 6 now (extends the run)" in caplog.text
  assert "checkpoint_every: 2 in the run on disk, 3 now (does not change results)" in caplog.text
  # The record of the run on disk is left as it was.
  assert (copied_run / "config.json").read_bytes() == config_json
  assert (copied_run / IDENTITY_FILE).read_bytes() == identity_json


def test_resume_force_continues_and_records_the_new_config(copied_run, task_file, caplog):
  forced = tiny_config(task_file, **{"optim.learning_rate": 3e-3, "resume": "force"})
  with caplog.at_level(logging.INFO):
    result = train(forced, copied_run)
  assert result.step == STEPS
  assert "--config.resume=force: continuing" in caplog.text and "optim.learning_rate: 0.001 in" in caplog.text
  assert json.loads((copied_run / "config.json").read_text())["optim"]["learning_rate"] == 3e-3
  assert json.loads((copied_run / IDENTITY_FILE).read_text())["config"]["optim"]["learning_rate"] == 3e-3


def test_the_data_is_compared_by_content_not_by_path(copied_run, task_file, tmp_path, caplog):
  """The same rows at another path resume (with fields that only say where or how it runs
  changed); the rows edited are refused, naming the input."""
  moved = tmp_path / "moved.jsonl"
  shutil.copy(task_file, moved)
  elsewhere = tiny_config(
    moved, **{"checkpoint_every": 1, "log_every": 2, "keep_checkpoints": 5, "mesh.shape": (8, 1, 1)}
  )
  with caplog.at_level(logging.INFO):
    assert train(elsewhere, copied_run).step == STEPS
  assert "data.path:" in caplog.text and "(does not change results)" in caplog.text
  moved.write_text(moved.read_text().replace("otter", "beaver"))
  with pytest.raises(RunMismatch, match=r"inputs.data: \"sha256:\w+\" in .*, \"sha256:\w+\" now"):
    train(tiny_config(moved), copied_run)


# -- a checkpoint that does not fit the model -------------------------------------------------------


def test_a_resume_with_another_vocabulary_names_the_array_and_moves_nothing(copied_run, task_file):
  before = sorted(p.name for p in (copied_run / "checkpoints").iterdir())
  overrides = {"vocab_size": 50000, "max_position_embeddings": 2048}
  forced = tiny_config(task_file, **{"model.overrides": overrides, "resume": "force"})
  with pytest.raises(CheckpointMismatch) as info:
    train(forced, copied_run)
  message = str(info.value)
  assert f"{copied_run / 'checkpoints' / str(STEPS)}: the checkpoint of step {STEPS} does not fit" in message
  assert (
    "array 'params/embed/value' is (49152, 64) float32 in the checkpoint, (50000, 64) float32 in "
    "the model (and 5 more arrays)"
  ) in message
  assert "\n" not in message
  assert sorted(p.name for p in (copied_run / "checkpoints").iterdir()) == before
  assert not (copied_run / CORRUPT_DIR).exists()


def test_restore_tells_a_shape_or_dtype_mismatch_from_damage(tmp_path):
  # 16 KiB of weights that compress badly: the step's largest file, which the damage below deletes.
  state = {"w": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64), "b": jnp.zeros((8,), jnp.float32)}
  saver = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
  for step in (1, 2):
    saver.save(step, state, {"position": step}, force=True)
  saver.close()
  sharding = state["w"].sharding

  def abstract(**changes):
    values = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in state.items()}
    values.update({k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in changes.items()})
    return values

  folder = tmp_path / "checkpoints" / "2"
  cases = {
    "shape": (
      abstract(w=((64, 65), jnp.float32)),
      "array 'w' is (64, 64) float32 in the checkpoint, (64, 65) float32 in the model",
    ),
    "dtype": (
      abstract(b=((8,), jnp.bfloat16)),
      "array 'b' is (8,) float32 in the checkpoint, (8,) bfloat16 in the model",
    ),
    "missing": (
      abstract(extra=((2,), jnp.float32)),
      "array 'extra' is not in the checkpoint; the model has it as (2,) float32",
    ),
  }
  for name, (target, expected) in cases.items():
    checkpointer = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
    with pytest.raises(CheckpointMismatch) as info:
      checkpointer.restore_newest_intact(target, "previous")
    checkpointer.close()
    assert f"{folder}: the checkpoint of step 2 does not fit this run's model: {expected}" in str(info.value), name
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]
  assert not (tmp_path / CORRUPT_DIR).exists()
  # A data file lost is damage still: the step is set aside and the one before restores. (Deleted
  # before any read of its arrays, which TensorStore would cache.)
  max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size).unlink()
  checkpointer = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
  restored, position, step = checkpointer.restore_newest_intact(abstract(), "previous")
  checkpointer.close()
  assert step == 1 and position == {"position": 1} and (tmp_path / CORRUPT_DIR / "2").is_dir()


# -- a checkpoint save that fails in the background -------------------------------------------------


def test_a_failed_background_save_stops_the_run_naming_the_step_and_the_os_error(tmp_path, task_file, monkeypatch):
  """The data item of step 2's save fails with ENOSPC in Orbax's background write: the run stops
  before the next save with one line naming step 2's folder and the error."""
  from orbax.checkpoint._src.handlers import json_checkpoint_handler

  original = json_checkpoint_handler.JsonCheckpointHandler._save_fn
  calls = []

  async def disk_full_on_the_second(self, item, directory):
    calls.append(str(directory))
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await original(self, item, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_on_the_second)
  workdir = tmp_path / "run"
  with pytest.raises(CheckpointSaveError) as info:
    train(tiny_config(task_file, checkpoint_every=1), workdir)
  message = str(info.value)
  assert message.startswith(
    f"{workdir / 'checkpoints' / '2'}: the checkpoint of step 2 could not be written "
    f"([Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: "
  )
  assert message.endswith("training stops here, the newest complete checkpoint is step 1")
  assert "\n" not in message and info.value.errno == errno.ENOSPC
  assert max(losses(workdir)) in (2, 3)  # stopped in step 3, before its save
  assert len(calls) == 2


def test_orbax_tracebacks_are_cut_to_one_line_by_the_entry_point():
  from helpsteer_jax.train.library_logs import DropLibraryInfo

  def record(level: int, message: str, pathname: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 1, message, (), exc_info)

  try:
    raise OSError(errno.ENOSPC, "No space left on device")
  except OSError as e:
    failure = (type(e), e, e.__traceback__)
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  quiet = DropLibraryInfo()
  error = record(logging.ERROR, "save failed: spec {\n  'driver': 'zarr'\n}", orbax, failure)
  assert quiet.filter(error) and error.getMessage() == "save failed: spec {" and error.exc_info is None
  assert not quiet.filter(record(logging.INFO, "saving array", orbax))
  own = record(logging.ERROR, "line one\nline two", "/repo/helpsteer_jax/train/loop.py", failure)
  assert quiet.filter(own) and own.exc_info is failure and own.getMessage() == "line one\nline two"


# -- optimizer values -------------------------------------------------------------------------------

BAD_OPTIM = {
  "zero_lr": ("learning_rate", 0.0, "optim.learning_rate=0.0: must be > 0"),
  "negative_lr": ("learning_rate", -1e-5, "optim.learning_rate=-1e-05: must be > 0"),
  "negative_weight_decay": ("weight_decay", -0.1, "optim.weight_decay=-0.1: must be >= 0"),
  "b1_of_one": ("b1", 1.0, "optim.b1=1.0: must be in [0, 1)"),
  "negative_b2": ("b2", -0.5, "optim.b2=-0.5: must be in [0, 1)"),
  "zero_eps": ("eps", 0.0, "optim.eps=0.0: must be > 0"),
  "negative_clip": ("grad_clip_norm", -1.0, "optim.grad_clip_norm=-1.0: must be >= 0 (0 = no clipping)"),
  "negative_warmup": ("warmup_steps", -1, "optim.warmup_steps=-1: must be >= 0"),
  "final_fraction_over_one": ("final_lr_fraction", 1.5, "optim.final_lr_fraction=1.5: must be in [0, 1]"),
  "nan_lr": ("learning_rate", float("nan"), "optim.learning_rate=nan: must be finite"),
  "unknown_schedule": ("schedule", "exponential", "optim.schedule='exponential': expected one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIM))
def test_an_optimizer_value_out_of_range_fails_before_anything_is_built(case, tmp_path, task_file, no_model):
  field, value, expected = BAD_OPTIM[case]
  with pytest.raises(OptimizerConfigError) as info:
    train(tiny_config(task_file, **{f"optim.{field}": value}), tmp_path / "run")
  assert expected in str(info.value)
  assert not (tmp_path / "run").exists()


def test_a_warmup_longer_than_the_run_fails_once_the_length_is_known(tmp_path, task_file, no_model):
  with pytest.raises(OptimizerConfigError, match=r"optim.warmup_steps=10 is longer than the run \(4 steps\)"):
    train(tiny_config(task_file, **{"optim.warmup_steps": 10}), tmp_path / "run")
  with pytest.raises(OptimizerConfigError, match=r"optim.constant_steps=3 with optim.warmup_steps=2 is longer"):
    train(tiny_config(task_file, **{"optim.constant_steps": 3}), tmp_path / "run2")
  assert not (tmp_path / "run" / "checkpoints").exists()


# -- the export -------------------------------------------------------------------------------------


def test_an_export_that_cannot_be_written_names_its_folder(copied_run, task_file, tmp_path, monkeypatch):
  """A full disk mid-export (the write's error names no file) and an export folder under a file:
  both name the export folder, and the checkpoints are left for the same command to export."""
  from helpsteer_jax.checkpoints import hf

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  export = tmp_path / "export"
  with monkeypatch.context() as patch:
    patch.setattr(hf, "write_safetensors", disk_full)
    with pytest.raises(OSError) as info:
      train(tiny_config(task_file, export_dir=str(export)), copied_run)
  assert info.value.errno == errno.ENOSPC
  assert f"{export}: cannot write the export of the trained weights (No space left on device)" in str(info.value)
  assert f"the checkpoints in {copied_run / 'checkpoints'} are intact" in str(info.value)

  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(OSError) as info:
    train(tiny_config(task_file, export_dir=str(blocker / "export")), copied_run)
  assert f"{blocker / 'export'}: cannot write the export of the trained weights (" in str(info.value)
  assert str(blocker) in str(info.value).split("(", 1)[1]
