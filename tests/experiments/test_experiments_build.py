"""Every training experiment builds at `tiny` (model, task, first real batch) and at 70B (config and
abstract model, nothing allocated)."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from helpsteer_jax.train.tasks import make_task

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
TRAINING = sorted(p for p in EXPERIMENTS.glob("*.py"))


def load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_training_experiments():
  names = {p.stem for p in TRAINING}
  assert {
    "feedback_sft",
    "edit_sft",
    "steerlm_acsft",
    "edit_rm",
    "select_rm",
    "helpsteer2_rm",
    "steerlm_attribute",
    "edit_rloo",
    "chat_sft",
    "helpsteer2_preference_stage1",
    "helpsteer2_preference_stage2",
  } <= names


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.stem)
def test_builds_at_tiny(path, bundled_data, embedded_gguf_path):
  module = load(path)
  assert "python -m helpsteer_jax.train" in module.__doc__, "the docstring carries the launch command"
  config = module.get_config("tiny")
  with pytest.raises(AttributeError):
    config.not_a_field = 1  # locked: a misspelled override fails
  task = make_task(config)
  abstract = task.abstract_model(None)
  assert sum(x.size for x in jax.tree.leaves(abstract)) > 0
  if not config.data.path:
    return  # e.g. chat_sft: its data is whatever file the user gives
  data = task.train_data(0, 1)
  first = next(data)
  if config.trainer == "rloo":
    assert len(first) == config.data.batch_size and first[0].messages[-1]["role"] == "user"
    return
  spec = task.batch_spec()
  assert set(first) >= set(spec), f"batch keys {sorted(first)} lack {sorted(set(spec) - set(first))}"
  for key, want in spec.items():
    assert first[key].shape == want.shape, key
    assert np.dtype(first[key].dtype) == np.dtype(want.dtype), key


@pytest.mark.parametrize("path", [p for p in TRAINING if p.stem != "chat_sft"], ids=lambda p: p.stem)
def test_builds_at_70b_without_allocating(path):
  config = load(path).get_config("size=70b")
  assert config.model.preset == "llama3_70b" and config.model.overrides["dtype"] == "bfloat16"
  abstract = make_task(config).abstract_model(None)
  params = sum(x.size for x in jax.tree.leaves(abstract))
  assert 69e9 < params < 72e9
