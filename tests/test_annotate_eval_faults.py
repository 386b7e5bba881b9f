"""Faults and misuse of the annotate and evaluate entry points at tiny size: a rerun with another
model, other values or another input into an output that holds work; a row cut short by a crash;
two writers on one output; judge and sampling values out of range; judge replies without a
verdict; text that no UTF-8 tokenizer accepts."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import pytest
from flax import nnx

import helpsteer_jax as hj
from helpsteer_jax import annotate as annotate_module
from helpsteer_jax.annotate import annotate
from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.run_folder import RunFolderBusy, claim_run_folder
from helpsteer_jax.data.run_identity import RunMismatch
from helpsteer_jax.evaluate import evaluate
from helpsteer_jax.testing.judge_server import JudgeServer, benchmark_reply
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = ("helpfulness", "correctness")


def _no_model_loads(monkeypatch) -> None:
  """Any model load fails the test: the refusals must come before one."""
  fail = lambda *a, **k: pytest.fail("a model was loaded")
  monkeypatch.setattr(ModelPool, "reward_model", fail)
  monkeypatch.setattr(ModelPool, "causal_lm", fail)


def _altered_copy(folder: str, dest: pathlib.Path) -> str:
  """`folder` copied with the end of its largest file changed: other weights, same layout."""
  shutil.copytree(folder, dest)
  largest = max((p for p in dest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.seek(-64, os.SEEK_END)
    f.write(bytes(64))
  return str(dest)


def _lines(path) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def _write_rows(path, rows) -> None:
  pathlib.Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- annotate -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attribute_model(tmp_path_factory, embedded_gguf_path):
  from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
  from helpsteer_jax.checkpoints.reward import save_reward_model
  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.heads import RewardModel

  folder = tmp_path_factory.mktemp("attr") / "model"
  rm = RewardModel(get_preset("tiny", vocab_size=49152, max_position_embeddings=4096), len(LABELS), rngs=nnx.Rngs(1))
  save_reward_model(rm, tokenizer_from_gguf(embedded_gguf_path), str(folder), labels=LABELS, show_progress=False)
  return str(folder)


def _row(i: int, **extra) -> dict:
  return {"prompt": f"Question {i}?", "response": f"Answer {i}.", **extra}


def test_annotate_resumes_by_row_key_and_cuts_a_torn_tail(tmp_path, attribute_model):
  """A crash mid-line leaves half a row: the rerun cuts it and scores that row again. Rows are
  matched by key (id, or content without the labels), so an input that gained rows before and
  after the old ones gets exactly the missing ones, and repeated rows each keep their own."""
  old = [_row(1, id="a"), _row(2, helpfulness=9), _row(2, helpfulness=9)]  # a human label, a repeat
  rows, output = tmp_path / "rows.jsonl", tmp_path / "out" / "annotated.jsonl"
  _write_rows(rows, old)
  assert annotate(attribute_model, str(rows), str(output), batch_size=2) == 3
  with open(output, "a") as f:
    f.write(json.dumps({**_row(3), "helpfulness": 2})[:25])  # the crash cut this row short
  grown = [_row(0)] + old + [_row(3)]
  _write_rows(rows, grown)
  assert annotate(attribute_model, str(rows), str(output), batch_size=2) == 2
  written = _lines(output)  # every line parses: the torn one was cut, not glued to the next
  assert len(written) == 5
  strip = lambda r: {k: v for k, v in r.items() if k not in LABELS}
  assert sorted(map(json.dumps, map(strip, written))) == sorted(map(json.dumps, map(strip, grown)))
  assert all(set(r) == set(_row(0)) | set(LABELS) | ({"id"} if "id" in r else set()) for r in written)
  assert all(isinstance(r[name], int) and 0 <= r[name] <= 4 for r in written for name in LABELS)
  record = json.loads((tmp_path / "out" / "annotated.jsonl.run_identity").read_text())
  assert record["config"]["raw"] is False and record["models"]["model"]["fingerprint"].startswith("sha256:")
  assert annotate(attribute_model, str(rows), str(output)) == 0  # nothing left
  from helpsteer_jax.data.sources import local_files

  assert local_files(str(output.parent)) == [str(output)]  # the folder as SFT data: rows only


def test_annotate_refuses_another_model_raw_or_input_before_loading(tmp_path, attribute_model, monkeypatch):
  rows, output = tmp_path / "rows.jsonl", tmp_path / "annotated.jsonl"
  _write_rows(rows, [_row(1), _row(2)])
  assert annotate(attribute_model, str(rows), str(output)) == 2
  other_model = _altered_copy(attribute_model, tmp_path / "other_model")
  _no_model_loads(monkeypatch)

  with pytest.raises(RunMismatch) as info:
    annotate(other_model, str(rows), str(output))
  message = str(info.value)
  assert f"{output} holds a run (annotation) that differs from this one in 1 field" in message
  assert 'models.model: "sha256:' in message and "--resume=force" in message
  with pytest.raises(RunMismatch, match=r"raw: false in .*annotated.jsonl.run_identity, true now"):
    annotate(attribute_model, str(rows), str(output), raw=True)
  other_rows = tmp_path / "other_rows.jsonl"
  _write_rows(other_rows, [_row(1), _row(7)])
  with pytest.raises(
    RunMismatch,
    match=r"annotated from another input: 1 of its 2 rows \(first: row 2\) "
    r"are not in .*other_rows.jsonl",
  ):
    annotate(attribute_model, str(other_rows), str(output))
  assert len(_lines(output)) == 2  # nothing written by the refused runs

  # --resume=force, through the command's main: the other input's new row is added.
  monkeypatch.undo()
  from absl import flags

  argv = ["annotate", f"--model={attribute_model}", f"--input={other_rows}", f"--output={output}", "--resume=force"]
  flags.FLAGS(argv)
  try:
    annotate_module.main(["annotate"])
  finally:
    flags.FLAGS.unparse_flags()
  assert len(_lines(output)) == 3


def test_two_annotate_runs_cannot_write_one_output(tmp_path, attribute_model, monkeypatch):
  rows, output = tmp_path / "rows.jsonl", tmp_path / "annotated.jsonl"
  _write_rows(rows, [_row(1)])
  _no_model_loads(monkeypatch)
  with claim_run_folder(tmp_path, what="another annotation", lock_name=".annotated.jsonl.lock"):
    with pytest.raises(RunFolderBusy, match=rf"in use by another annotation \(pid {os.getpid()} on host"):
      annotate(attribute_model, str(rows), str(output))
  assert not output.exists()
  with claim_run_folder(tmp_path, what="an annotation of another file", lock_name=".other.jsonl.lock"):
    with pytest.raises(pytest.fail.Exception, match="a model was loaded"):  # not blocked: it got to the model
      annotate(attribute_model, str(rows), str(output))


def test_annotate_names_the_line_of_a_lone_surrogate(tmp_path, attribute_model, monkeypatch):
  rows = tmp_path / "rows.jsonl"
  rows.write_text(json.dumps(_row(1)) + "\n" + '{"prompt": "Hi \\ud800 there", "response": "ok"}\n')
  _no_model_loads(monkeypatch)
  with pytest.raises(ValueError, match=rf"{rows}:2: field 'prompt' holds a lone surrogate"):
    annotate(attribute_model, str(rows), str(tmp_path / "out.jsonl"))


# -- evaluate -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny_chat") / "tiny_chat"
  hj.save_pretrained(tiny_chat_model(), smollm2_tokenizer(), str(out), show_progress=False)
  return str(out)


def _eval_config(model_dir: str = "", answers: str = ""):
  import importlib.util

  spec = importlib.util.spec_from_file_location("arena_hard", REPO / "experiments" / "eval" / "arena_hard.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  arg = "tiny" + (f",model={model_dir}" if model_dir else "") + (f",answers={answers}" if answers else "")
  config = module.get_config(arg)
  config.questions.limit = 1
  config.generation.max_new_tokens = 4
  config.scoring.bootstrap_rounds = 5
  return config


def _question_file(path: pathlib.Path, edit: str = "") -> str:
  from helpsteer_jax.data.prompt_sources import ARENA_HARD_QUESTIONS, locate

  rows = [json.loads(line) for line in open(locate(*ARENA_HARD_QUESTIONS))][:2]
  rows[1]["prompt"] += edit
  _write_rows(path, rows)
  return str(path)


def test_evaluate_refuses_another_model_or_sampling_in_a_workdir_with_answers(tmp_path, model_dir, monkeypatch):
  questions = _question_file(tmp_path / "questions.jsonl")
  work = tmp_path / "work"
  config = _eval_config(model_dir)
  config.questions.path = questions
  first = evaluate(config, str(work))
  record = json.loads((work / "run_identity.json").read_text())
  assert record["models"]["answers"]["path"] == model_dir and record["models"]["judge"]["name"] == "digit:tiny_chat"
  assert record["inputs"]["questions"].startswith("sha256:") and record["config"]["resume"] == "check"

  other_model = _altered_copy(model_dir, tmp_path / "tiny_chat")  # the same name, other weights
  _no_model_loads(monkeypatch)
  changed = _eval_config(other_model)
  changed.questions.path = questions
  with pytest.raises(RunMismatch) as info:
    evaluate(changed, str(work))
  message = str(info.value)
  assert f"{work} holds a run (benchmark evaluation) that differs from this one in 2 fields" in message
  before, now = record["models"]["answers"]["fingerprint"], json.loads((work / "run_identity.json").read_text())
  assert f'models.answers: "{before}" in {work}/run_identity.json, "sha256:' in message
  assert "models.judge:" in message  # the digit judge is the answer model: the same name, other weights
  assert now == record  # a refused run records nothing

  hotter = _eval_config(model_dir)
  hotter.questions.path = questions
  hotter.generation.temperature = 0.7
  hotter.questions.limit = 2  # only extends the run: not named
  with pytest.raises(
    RunMismatch,
    match=r"in 1 field that changes results:\n  generation.temperature: "
    r"0.0 in .*, 0.7 now",
  ):
    evaluate(hotter, str(work))
  other_questions = _eval_config(model_dir)
  other_questions.questions.path = _question_file(tmp_path / "edited.jsonl", edit=" (edited)")
  with pytest.raises(RunMismatch, match=r"inputs.questions: \"sha256:\w+\" in .*, \"sha256:\w+\" now"):
    evaluate(other_questions, str(work))

  # resume=force: continues on the answers on disk (the user's choice), loading nothing.
  hotter.questions.limit = 1
  hotter.resume = "force"
  assert evaluate(hotter, str(work))["headline"] == first["headline"]
  assert json.loads((work / "run_identity.json").read_text())["config"]["generation"]["temperature"] == 0.7


@pytest.mark.parametrize(
  "field,value,expected",
  [
    ("judge.max_retries", -1, "judge.max_retries=-1: must be >= 0"),
    ("judge.timeout_s", 0.0, "judge.timeout_s=0.0: must be > 0 seconds"),
    ("judge.max_workers", 0, "judge.max_workers=0: must be at least 1"),
    ("judge.temperature", -0.5, "judge.temperature=-0.5: must be >= 0"),
    ("judge.max_tokens", 0, "judge.max_tokens=0: must be at least 1"),
    ("generation.temperature", -1.0, "generation.temperature=-1.0: must be >= 0"),
    ("generation.top_p", 0.0, "generation.top_p=0.0: must be in (0, 1]"),
    ("generation.top_p", 1.5, "generation.top_p=1.5: must be in (0, 1]"),
    ("generation.max_new_tokens", 0, "generation.max_new_tokens=0: must be at least 1"),
    ("generation.top_k", -2, "generation.top_k=-2: must be >= 0"),
    ("resume", "sometimes", "resume='sometimes': must be one of ('check', 'force')"),
  ],
)
def test_evaluate_checks_judge_and_sampling_values_before_anything(tmp_path, monkeypatch, field, value, expected):
  config = _eval_config()
  config.judge.kind = "http"
  section, _, name = field.rpartition(".")
  target = config[section] if section else config
  with config.unlocked():
    target[name] = value  # top_k is no default field: a config may add it
  _no_model_loads(monkeypatch)
  with pytest.raises(ValueError, match="invalid evaluation config:\n  " + re.escape(expected)):
    evaluate(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def test_the_http_judge_settings_check_their_values():
  from helpsteer_jax.eval.judges.http_judge import HttpJudgeSettings

  with pytest.raises(ValueError, match=r"judge.max_retries=-1: must be >= 0"):
    HttpJudgeSettings(base_url="http://127.0.0.1:9/v1", model="m", max_retries=-1)
  with pytest.raises(ValueError, match=r"judge.timeout_s=0: must be > 0"):
    HttpJudgeSettings(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=0)


def _answers_file(path: pathlib.Path, count: int = 1) -> str:
  from helpsteer_jax.data.prompt_sources import ARENA_HARD_QUESTIONS, locate

  with open(locate(*ARENA_HARD_QUESTIONS)) as f:
    ids = [json.loads(next(f))["uid"] for _ in range(count)]
  _write_rows(path, [{"question_id": qid, "model": "given", "turns": [f"Answer {qid}."]} for qid in ids])
  return str(path)


def test_judge_replies_without_a_verdict_are_judged_again(tmp_path, monkeypatch):
  """No model: the answers come from a file, an HTTP judge on 127.0.0.1 judges them."""
  monkeypatch.setenv("FAULTS_JUDGE_KEY", "k")
  work = tmp_path / "work"
  config = _eval_config(answers=_answers_file(tmp_path / "answers.jsonl", count=2))
  config.questions.limit = 2
  config.judge.kind = "http"
  config.judge.api_key_env = "FAULTS_JUDGE_KEY"
  config.judge.model = "loopback-judge"
  config.judge.backoff_s = 0.01
  calls = []

  def first_without_verdict(messages):
    calls.append(1)
    return "Both are fine, I cannot decide." if len(calls) == 1 else benchmark_reply(messages)

  with JudgeServer(reply=first_without_verdict) as server:
    config.judge.base_url = server.base_url
    failed = evaluate(config, str(work))
    assert failed["counts"] == {"questions": 2, "judged": 2, "failed": 1} and len(server.requests) == 4
    cache = work / "judge_cache.jsonl"
    assert len(_lines(cache)) == 3  # the reply without a verdict is not kept

    judged = evaluate(config, str(work))  # its judgment is judged again, not kept as done
    assert judged["counts"] == {"questions": 2, "judged": 2, "failed": 0}
    assert len(server.requests) == 5  # the game without a verdict only: the other came from the cache
    assert judged["headline"]["value"] == pytest.approx(50.0)
    assert evaluate(config, str(work))["counts"]["failed"] == 0 and len(server.requests) == 5

    # Replies without a verdict in a cache an older run wrote are asked again, not replayed.
    entries = _lines(cache)
    assert len(entries) == 4
    texts = ["", "No verdict here.", entries[2]["text"], entries[3]["text"]]
    _write_rows(cache, [{**e, "text": text} for e, text in zip(entries, texts)])
    (work / "judgments.jsonl").unlink()
    again = evaluate(config, str(work))
    assert again["counts"]["failed"] == 0 and len(server.requests) == 7


def test_evaluate_names_the_line_of_a_lone_surrogate(tmp_path, monkeypatch):
  _no_model_loads(monkeypatch)
  questions = tmp_path / "questions.jsonl"
  good = {"uid": "q1", "prompt": "Hi", "category": "c"}
  questions.write_text(json.dumps(good) + "\n" + '{"uid": "q2", "prompt": "Bad \\udc00 text"}\n')
  config = _eval_config(answers=_answers_file(tmp_path / "answers.jsonl"))
  config.judge.kind = "http"
  config.questions.path = str(questions)
  with pytest.raises(ValueError, match=rf"{questions}:2: field 'prompt' holds a lone surrogate"):
    evaluate(config, str(tmp_path / "work"))

  answers = tmp_path / "answers.jsonl"
  answers.write_text('{"question_id": "x", "model": "m", "turns": ["fine \\ud83d\\ude00", "bad \\ud800"]}\n')
  config = _eval_config(answers=str(answers))
  config.judge.kind = "http"
  with pytest.raises(ValueError, match=rf"{answers}:1: field 'turns\[1\]' holds a lone surrogate"):
    evaluate(config, str(tmp_path / "work2"))

  listed = tmp_path / "outputs.json"  # AlpacaEval's layout: one JSON document
  listed.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "\\ud800"}\n]\n')
  config = _eval_config(answers=str(listed))
  config.judge.kind = "http"
  with pytest.raises(ValueError, match=rf"{listed}:3: field '\[1\].output' holds a lone surrogate"):
    evaluate(config, str(tmp_path / "work3"))
