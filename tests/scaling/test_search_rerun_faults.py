"""A search folder knows what produced it: a rerun that would mix another search into it refuses
before any model loads, naming each differing field; a rerun that only extends it goes on; bad
values fail when the config is read, naming the stage."""

from __future__ import annotations

import errno
import json
import logging

import pytest

import helpsteer_jax as hj
from helpsteer_jax import scale
from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.run_identity import IDENTITY_FILE, RunMismatch
from helpsteer_jax.scaling.results import read_records
from helpsteer_jax.testing.search_runs import search_config as tiny_search_config
from helpsteer_jax.testing.search_runs import write_prompts
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("other_chat")
  hj.save_pretrained(tiny_chat_model(seed=7), smollm2_tokenizer(), str(out), show_progress=False)
  return str(out)


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory):
  """A finished two-prompt search; each test copies it."""
  root = tmp_path_factory.mktemp("finished")
  prompts = root / "prompts.jsonl"
  write_prompts(prompts, ["Say hi.", "Name a colour."])
  scale.run_search(tiny_search_config(model_dir, prompts, root / "out", prompts_per_batch=None))
  return root


@pytest.fixture
def folder(finished, tmp_path):
  import shutil

  shutil.copytree(finished, tmp_path / "run")
  return tmp_path / "run"


@pytest.fixture
def no_model_loads(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("a model loaded before the rerun was checked")

  monkeypatch.setattr(ModelPool, "causal_lm", refuse)
  monkeypatch.setattr(ModelPool, "reward_model", refuse)


def search_config(model_dir, folder, **search):
  config = tiny_search_config(model_dir, folder / "prompts.jsonl", folder / "out", prompts_per_batch=None)
  for key, value in search.items():
    config.search[key] = value
  return config


def test_records_and_the_folder_name_what_produced_them(folder, model_dir):
  from helpsteer_jax.checkpoints.identity import model_identity

  identity = json.loads((folder / "out" / IDENTITY_FILE).read_text())
  policy = model_identity(model_dir)
  assert identity["what"] == "scaling search"
  assert identity["models"]["policy"] == policy.to_record()
  assert identity["config"]["search"]["num_drafts"] == 2
  assert identity["inputs"]["prompts"].startswith("sha256:")
  records = read_records(str(folder / "out"))
  assert len(records) == 2 and len({r["prompt_fingerprint"] for r in records}) == 2
  assert all(r["models"]["policy"]["fingerprint"] == policy.fingerprint for r in records)
  assert all(r["models"]["feedback"] == r["models"]["policy"] for r in records)  # the policy plays it


def test_more_drafts_another_seed_and_another_policy_are_refused_naming_each_field(
  folder, model_dir, other_model_dir, no_model_loads
):
  config = search_config(other_model_dir, folder, num_drafts=4, seed=3)
  with pytest.raises(RunMismatch) as error:
    scale.run_search(config)
  message = str(error.value)
  assert "search.num_drafts: 2 in" in message and "4 now" in message
  assert "search.seed: 0 in" in message and "3 now" in message
  for role in ("policy", "feedback", "edit", "selector"):
    assert f"models.{role}:" in message
  assert "policy.path" not in message  # a path is compared by its model's fingerprint
  assert "--config.resume=force" in message
  assert json.loads((folder / "out" / IDENTITY_FILE).read_text())["config"]["search"]["num_drafts"] == 2


def test_another_question_under_an_id_on_disk_is_refused(folder, model_dir, no_model_loads):
  write_prompts(folder / "prompts.jsonl", ["Say hi.", "Name a fruit."])
  with pytest.raises(RunMismatch, match=r"1 prompt id \(q1\) whose question differs"):
    scale.run_search(search_config(model_dir, folder))


def test_new_prompts_and_a_moved_model_extend_the_run(folder, model_dir, tmp_path, caplog):
  import shutil

  moved = tmp_path / "moved_model"
  shutil.copytree(model_dir, moved)
  write_prompts(folder / "prompts.jsonl", ["Say hi.", "Name a colour.", "Count to two."])
  before = read_records(str(folder / "out"))
  with caplog.at_level(logging.INFO, logger="helpsteer_jax.data.run_identity"):
    summary = scale.run_search(search_config(str(moved), folder))
  assert summary["num_prompts"] == 3
  assert read_records(str(folder / "out"))[:2] == before  # the finished prompts are kept as they were
  assert "inputs.prompts" in caplog.text and "extends the run" in caplog.text


def test_force_continues_and_logs_each_overridden_field(folder, model_dir, caplog):
  config = search_config(model_dir, folder, num_drafts=3)
  config.resume = "force"
  write_prompts(folder / "prompts.jsonl", ["Say hi.", "Name a colour.", "Count to two."])
  with caplog.at_level(logging.WARNING):
    scale.run_search(config)
  assert "--config.resume=force: continuing" in caplog.text and "search.num_drafts: 2 in" in caplog.text
  records = read_records(str(folder / "out"))
  assert [len(r["drafts"]) for r in records] == [2, 2, 3]


@pytest.mark.parametrize(
  "stage_name, field, value, expected",
  [
    ("draft", "max_new_tokens", -1, "search.draft.max_new_tokens=-1; expected at least 1"),
    ("feedback", "temperature", -1.0, "search.feedback.temperature=-1.0; expected >= 0"),
    ("edit", "top_p", 1.5, r"search.edit.top_p=1.5; expected in \(0, 1\]"),
    ("draft", "top_k", -5, "search.draft.top_k=-5; expected >= 1"),
  ],
)
def test_sampling_values_fail_naming_the_stage_before_any_folder_or_model(
  model_dir, tmp_path, no_model_loads, stage_name, field, value, expected
):
  write_prompts(tmp_path / "prompts.jsonl", ["Hi"])
  config = search_config(model_dir, tmp_path, mode="greedy")  # the edit stage is checked though no edit runs
  config.search[stage_name][field] = value
  with pytest.raises(ValueError, match=expected):
    scale.run_search(config)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "field, value, expected",
  [
    ("prompts.limit", -1, "prompts.limit=-1; expected at least 0"),
    ("prompts_per_batch", 0, "prompts_per_batch=0; expected at least 1"),
    ("search.num_drafts", 0, "num_drafts=0; expected at least 1"),
  ],
)
def test_run_values_fail_before_any_folder_or_model(model_dir, tmp_path, no_model_loads, field, value, expected):
  config = search_config(model_dir, tmp_path)
  block, _, name = field.rpartition(".")
  (config[block] if block else config)[name] = value
  with pytest.raises(ValueError, match=expected):
    scale.run_search(config)
  assert not (tmp_path / "out").exists()


def test_an_unknown_resume_mode_fails_before_any_folder(model_dir, tmp_path):
  config = search_config(model_dir, tmp_path)
  config.resume = "always"
  with pytest.raises(ValueError, match=r"resume='always'; expected one of \('check', 'force'\)"):
    scale.run_search(config)
  assert not (tmp_path / "out").exists()


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
  from helpsteer_jax import storage
  from helpsteer_jax.storage import files

  target = tmp_path / "summary.json"
  target.write_text("old")

  def full(f):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(files, "sync", full)
  with pytest.raises(OSError, match=rf"{target}: cannot write \(No space left on device\)") as error:
    storage.write_atomic(target, "new")
  assert error.value.errno == errno.ENOSPC
  assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
