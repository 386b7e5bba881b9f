"""Runs whose folders are in a bucket (a GCS emulator): the search killed and resumed, an
evaluation run twice, the tables, a merge and an annotation, each giving what the same run gives
on local disk, and none of them making a local folder named `gs:`."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpsteer_jax import scale, storage
from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl
from helpsteer_jax.eval.results import make_result, write_result
from helpsteer_jax.storage import object_log
from helpsteer_jax.tables import make_tables
from helpsteer_jax.testing.checkout import REPO
from helpsteer_jax.testing.judge_server import JudgeServer
from helpsteer_jax.testing.search_runs import one_at_a_time_command, records_by_id, search_config, write_prompts
from helpsteer_jax.testing.subprocesses import run_entry

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

KEY_ENV = "HELPSTEER_STORAGE_JUDGE_KEY"


PNG = b"\x89PNG\r\n\x1a\n"


def _no_local_bucket_folder(*folders) -> None:
  for folder in folders:
    assert not os.path.exists(os.path.join(folder, "gs:")), f"a local gs: folder in {folder}"


def _one_at_a_time(config):
  config.prompts_per_batch = 1
  config.prompts_in_flight = 1
  return config


@pytest.mark.entry
def test_a_search_in_a_bucket_killed_and_resumed_equals_a_local_run(model_dir, gcs_bucket, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["What is 2+2?", "Name a colour.", "Say hello."])
  local = tmp_path / "local"
  scale.run_search(_one_at_a_time(search_config(model_dir, prompts, local)))

  out = storage.join(gcs_bucket, "search1")
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  args = one_at_a_time_command(model_dir, prompts, out)
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
  results = storage.join(out, "results.jsonl")
  proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  while proc.poll() is None and not JsonlAppender(results).read():
    time.sleep(0.05)
  if proc.poll() is None:
    os.kill(proc.pid, signal.SIGKILL)
  _, err = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
  killed_with = len(read_jsonl(results, torn_tail_ok=True))
  assert 1 <= killed_with < 3 and not storage.exists(storage.join(out, "summary.json"))

  # The rerun takes over the dead run's lock, resumes after its records and compacts the log.
  printed = run_entry(args, cwd=cwd, env=env, timeout=300)
  assert f"results in {out}" in printed
  records = {r["id"]: r for r in read_jsonl(results)}
  assert records == records_by_id(local)
  assert storage.listdir(object_log.parts_folder(results)) == ["00000000-00000002.jsonl"]
  summary = json.loads(storage.read_text(storage.join(out, "summary.json")))
  assert summary["num_prompts"] == 3 and summary["config"]["output_dir"] == out
  assert storage.read_bytes(storage.join(out, "distill.jsonl")) == (local / "distill.jsonl").read_bytes()
  assert not storage.exists(storage.join(out, ".lock"))

  # A merge of the bucket's run folder, into the bucket, holds what a merge of the local one holds.
  from helpsteer_jax.scaling.merge import merge_runs

  merge_runs([out], storage.join(gcs_bucket, "merged"))
  merge_runs([str(local)], str(tmp_path / "merged"))
  for name in ("results.jsonl", "distill.jsonl"):
    assert storage.read_bytes(storage.join(gcs_bucket, "merged", name)) == (tmp_path / "merged" / name).read_bytes()
  _no_local_bucket_folder(cwd, os.getcwd(), REPO)


def _evaluate_args(model_dir, server, workdir):
  return [
    sys.executable,
    "-m",
    "helpsteer_jax.evaluate",
    f"--config=experiments/eval/arena_hard.py:tiny,model={model_dir},judge=http,label=base",
    f"--config.judge.base_url={server.base_url}",
    f"--config.judge.api_key_env={KEY_ENV}",
    "--config.judge.model=loopback-judge",
    "--config.judge.max_tokens=32",
    "--config.questions.limit=2",
    "--config.questions_per_batch=1",
    "--config.generation.max_new_tokens=4",
    "--config.scoring.bootstrap_rounds=10",
    f"--workdir={workdir}",
  ]


@pytest.mark.entry
def test_an_evaluation_in_a_bucket_resumes_and_equals_a_local_one(
  model_dir, gcs_bucket, tmp_path, bundled_data, monkeypatch
):
  monkeypatch.setenv(KEY_ENV, "sk-storage-test")
  env = dict(os.environ)
  work = storage.join(gcs_bucket, "eval", "arena")
  local = tmp_path / "arena"
  with JudgeServer() as server:
    run_entry(_evaluate_args(model_dir, server, local), cwd=REPO, env=env, timeout=300)
    calls = len(server.requests)
    printed = run_entry(_evaluate_args(model_dir, server, work), cwd=REPO, env=env, timeout=300)
    assert f"results in {work}" in printed and len(server.requests) == 2 * calls
    # The second run finds every answer and judgment in the bucket: no judge call, no new row.
    run_entry(_evaluate_args(model_dir, server, work), cwd=REPO, env=env, timeout=300)
    assert len(server.requests) == 2 * calls
  for name in ("answers.jsonl", "judgments.jsonl", "judge_cache.jsonl"):
    # The judge's calls run in parallel: its cache rows are in the order the replies came.
    ordered = (lambda rows: sorted(rows, key=lambda r: r["key"])) if name == "judge_cache.jsonl" else list
    assert ordered(read_jsonl(storage.join(work, name))) == ordered(read_jsonl(local / name)), name
    parts = storage.listdir(object_log.parts_folder(storage.join(work, name)))
    assert len(parts) == 1, (name, parts)  # compacted when the run finished
  remote = json.loads(storage.read_text(storage.join(work, "eval_result.json")))
  here = json.loads((local / "eval_result.json").read_text())
  for key in ("benchmark", "model", "label", "judge", "headline", "metrics", "counts"):
    assert remote[key] == here[key], key
  # The tables read results from the bucket as they read them from disk.
  report = make_tables([storage.join(gcs_bucket, "eval")], str(tmp_path / "tables"), plots=False)
  assert report["num_results"] == 1
  assert "| base |" in (tmp_path / "tables" / "tables.md").read_text()
  _no_local_bucket_folder(REPO, os.getcwd())


def _write_results(root):
  for label, score in (
    ("nemotron_instruct:greedy", 40.0),
    ("nemotron_instruct:feedback_edit", 60.0),
    ("nemotron_instruct:feedback_self_edit", 52.0),
  ):
    scaling = (
      None
      if label.endswith("greedy")
      else {"token_multiple": 16.0, "mode": "feedback_edit", "drafts": 8, "feedbacks": 16, "edits": 1}
    )
    result = make_result(
      "arena_hard",
      f"model-{label}",
      score,
      (score - 2, score + 3),
      {},
      {"questions": 10, "judged": 10, "failed": 0},
      label=label,
      scaling=scaling,
    )
    result["created"] = "2025-01-01T00:00:00+00:00"
    write_result(storage.join(root, "arena_hard", label.split(":")[1]), result)


@pytest.mark.entry
def test_tables_from_and_into_a_bucket_equal_the_local_ones(gcs_bucket, tmp_path):
  results, out = storage.join(gcs_bucket, "results"), storage.join(gcs_bucket, "tables")
  _write_results(results)
  _write_results(str(tmp_path / "results"))
  local = tmp_path / "tables"
  make_tables([str(tmp_path / "results")], str(local))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  printed = run_entry(
    [sys.executable, "-m", "helpsteer_jax.tables", f"--results={results}", f"--out={out}"],
    cwd=cwd,
    env=dict(os.environ),
    timeout=120,
  )
  assert "### Main results" in printed and f"wrote 7 files to {out}" in printed
  assert storage.listdir(out) == sorted(os.listdir(local))
  for name in ("tables.md", "main.csv", "ablation.csv", "scaling_arena_hard_drafts.png"):
    assert storage.read_bytes(storage.join(out, name)) == (local / name).read_bytes(), name
  assert storage.read_bytes(storage.join(out, "scaling_arena_hard_edits.png"))[:8] == PNG
  _no_local_bucket_folder(cwd)


def test_annotations_appended_into_a_bucket_resume_and_equal_local_ones(gcs_bucket, tmp_path, embedded_gguf_path):
  from flax import nnx

  from helpsteer_jax.annotate import annotate
  from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
  from helpsteer_jax.checkpoints.reward import save_reward_model
  from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.heads import RewardModel

  model = str(tmp_path / "attr")
  rm = RewardModel(get_preset("tiny", vocab_size=49152, max_position_embeddings=4096), 9, rngs=nnx.Rngs(1))
  save_reward_model(rm, tokenizer_from_gguf(embedded_gguf_path), model, labels=STEERLM_ATTRIBUTES, show_progress=False)
  rows = [
    {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
    for i in range(5)
  ]
  source = storage.join(gcs_bucket, "rows.jsonl")  # the input is read from the bucket too
  storage.write_atomic(source, "".join(json.dumps(row) + "\n" for row in rows))
  output = storage.join(gcs_bucket, "annotated.jsonl")
  local = tmp_path / "annotated.jsonl"
  assert annotate(model, source, str(local), batch_size=2) == 5
  # The bucket's output as a first run cut short after its first batch left it; the rerun goes on.
  JsonlAppender(output).append([json.loads(line) for line in local.read_text().splitlines()[:2]])
  assert annotate(model, source, output, batch_size=2) == 3
  assert annotate(model, source, output, batch_size=2) == 0
  assert storage.listdir(object_log.parts_folder(output)) == ["00000000-00000002.jsonl"]  # compacted
  assert object_log.read_log(output) == local.read_bytes()
  _no_local_bucket_folder(os.getcwd())
