"""The staged schedule through the real entry point: the same records as the pipelined one, one
model loaded at a time, and a kill -9 in the feedback stage resumed without redoing its samples."""

import json
import os
import signal
import subprocess
import sys
import time
import weakref

import pytest

import helpsteer_jax as hj
from helpsteer_jax import scale
from helpsteer_jax.checkpoints import pretrained
from helpsteer_jax.testing.checkout import REPO
from helpsteer_jax.testing.search_runs import EXPERIMENT, records_by_id, search_config, write_prompts
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello."]
# 16 feedbacks sampled per draft: the feedback stage's 96 samples take several decode calls of
# the 16 slots, so that a kill can land between them.
FEEDBACK_SAMPLES = 16


def _config(model_dir, prompts, out):
  config = search_config(model_dir, prompts, out)
  config.search.num_feedback_samples = FEEDBACK_SAMPLES
  return config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A random model that writes words, not whitespace: its feedback is kept and edits run."""
  out = tmp_path_factory.mktemp("talking")
  hj.save_pretrained(tiny_chat_model(tie_word_embeddings=False), smollm2_tokenizer(), str(out), show_progress=False)
  return str(out)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
  path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
  write_prompts(path, PROMPTS)
  return path


@pytest.fixture(scope="module")
def pipelined(model_dir, prompts, tmp_path_factory):
  out = tmp_path_factory.mktemp("pipelined")
  scale.run_search(_config(model_dir, prompts, out))
  return records_by_id(out)


def _staged(config):
  config.search.schedule = "staged"
  return config


def _lines(path):
  return path.read_text().count("\n") if path.exists() else 0


def test_staged_records_equal_pipelined(model_dir, prompts, pipelined, tmp_path):
  out = tmp_path / "staged"
  summary = scale.run_search(_staged(_config(model_dir, prompts, out)))
  assert records_by_id(out) == pipelined
  assert summary["num_prompts"] == 3 and summary["tokens"]["edits"] > 0
  # Every sample of every stage went to the stage files first: the drafts and greedy answers,
  # then one feedback line per sampled feedback and one edit line per edit.
  staged = out / "stages"
  records = pipelined.values()
  assert _lines(staged / "policy.jsonl") == sum(len(r["drafts"]) + 1 for r in records)
  assert _lines(staged / "feedback.jsonl") == sum(len(d["feedbacks"]) for r in records for d in r["drafts"])
  assert _lines(staged / "edit.jsonl") == sum(
    len(g["edits"]) for r in records for d in r["drafts"] for g in d["edit_groups"]
  )


def test_feedback_on_the_best_draft_is_the_same_under_both_schedules(model_dir, prompts, tmp_path):
  """search.feedback_drafts: the staged schedule scores the drafts in a rank stage before the
  feedback stage, the pipelined one as they arrive; both give feedback to the same draft."""
  records = {}
  for schedule in ("pipelined", "staged"):
    config = _config(model_dir, prompts, tmp_path / schedule)
    config.search.update(schedule=schedule, feedback_drafts=1, num_feedback_samples=4)
    scale.run_search(config)
    records[schedule] = records_by_id(tmp_path / schedule)
  assert records["staged"] == records["pipelined"]
  for r in records["staged"].values():
    with_feedback = [d for d in r["drafts"] if d["feedbacks"]]
    assert len(with_feedback) == 1 and with_feedback[0]["score"] == max(d["score"] for d in r["drafts"])


@pytest.mark.entry
def test_a_kill_in_the_feedback_stage_resumes_there(model_dir, prompts, pipelined, tmp_path):
  out = tmp_path / "killed"
  args = [
    sys.executable,
    "-m",
    "helpsteer_jax.scale",
    f"--config={EXPERIMENT}",
    f"--config.policy.path={model_dir}",
    "--config.prompts.source=jsonl",
    f"--config.prompts.path={prompts}",
    "--config.prompts.limit=0",
    "--config.prompts_per_batch=2",
    "--config.search.schedule=staged",
    f"--config.search.num_feedback_samples={FEEDBACK_SAMPLES}",
    f"--config.output_dir={out}",
  ]
  for name in ("draft", "feedback", "edit"):
    args += [f"--config.search.{name}.temperature=1.0", f"--config.search.{name}.max_new_tokens=5"]
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  feedback = out / "stages" / "feedback.jsonl"
  while proc.poll() is None and _lines(feedback) < 1:
    time.sleep(0.01)
  if proc.poll() is None:
    os.kill(proc.pid, signal.SIGKILL)
  _, err = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
  assert not (out / "results.jsonl").exists()
  before = _lines(feedback)
  total = sum(len(d["feedbacks"]) for r in pipelined.values() for d in r["drafts"])
  assert 1 <= before < total
  written = [json.loads(line) for line in feedback.read_text().splitlines()]
  scale.run_search(_staged(_config(model_dir, prompts, out)))
  assert records_by_id(out) == pipelined
  # The resume sent only the missing feedback samples: the file holds each sample once.
  after = [json.loads(line) for line in feedback.read_text().splitlines()]
  assert after[: len(written)] == written and len(after) == total
  assert _lines(out / "stages" / "policy.jsonl") == sum(len(r["drafts"]) + 1 for r in pipelined.values())


def test_each_model_is_freed_before_the_next_loads(tmp_path, prompts, monkeypatch):
  tokenizer = smollm2_tokenizer()
  folders = {}
  for seed, role in enumerate(("policy", "feedback", "edit")):
    folders[role] = str(tmp_path / role)
    hj.save_pretrained(tiny_chat_model(seed, tie_word_embeddings=False), tokenizer, folders[role], show_progress=False)

  def config(out):
    c = _config(folders["policy"], prompts, out)
    c.prompts.limit = 2
    c.feedback_model.path, c.edit_model.path = folders["feedback"], folders["edit"]
    return c

  scale.run_search(config(tmp_path / "pipelined"))
  loads, alive = [], []
  original = pretrained.load_pretrained

  def load(path, **kwargs):
    # Nothing loaded earlier is still alive (the judge is the policy: loaded again to select).
    assert all(ref() is None for ref in alive), f"{path} loads while an earlier model is alive"
    model, tok = original(path, **kwargs)
    loads.append(os.path.basename(path))
    alive.append(weakref.ref(model))
    return model, tok

  monkeypatch.setattr(pretrained, "load_pretrained", load)
  scale.run_search(_staged(config(tmp_path / "staged")))
  assert loads == ["policy", "feedback", "edit", "policy"]
  assert records_by_id(tmp_path / "staged") == records_by_id(tmp_path / "pipelined")
