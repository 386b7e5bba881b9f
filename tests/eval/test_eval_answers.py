"""Answer files in every layout the evaluation reads, the bundled benchmark files, and the
append-only JSONL log that makes runs resumable."""

import json

import pytest

from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.eval import sources
from helpsteer_jax.eval.answers import read_answers

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

QUESTIONS = [sources.Question("q1", ("Say hi",)), sources.Question("q2", ("Say bye",))]


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_bundled_arena_hard_questions_and_baseline(bundled_data):
  questions = sources.arena_hard_questions()
  baseline = sources.arena_hard_baseline()
  assert len(questions) == 500 and len(baseline) == 500
  assert all(q.id in baseline and baseline[q.id] for q in questions)
  assert [q.id for q in sources.arena_hard_questions(start=2, limit=3)] == [q.id for q in questions[2:5]]
  # The baseline file read as an answer file (arena-hard-auto's model-answer layout).
  answers = read_answers(str(bundled_data / "eval/arena-hard-v0.1/gpt-4-0314.jsonl"), questions)
  assert answers.model == "gpt-4-0314" and answers.turns[questions[0].id] == [baseline[questions[0].id]]


def test_project_fastchat_and_older_arena_layouts(tmp_path):
  ours = _jsonl(tmp_path / "ours.jsonl", [{"question_id": "q1", "model": "m", "turns": ["hi"], "num_tokens": [1]}])
  assert read_answers(ours, QUESTIONS).turns == {"q1": ["hi"]}
  fastchat = _jsonl(
    tmp_path / "fc.jsonl", [{"question_id": "q1", "model_id": "fc", "choices": [{"turns": ["a", "b"]}]}]
  )
  got = read_answers(fastchat, QUESTIONS)
  assert got.turns["q1"] == ["a", "b"] and got.model == "fc"
  older = _jsonl(
    tmp_path / "old.jsonl", [{"question_id": "q2", "model_id": "o", "choices": [{"turns": [{"content": "bye"}]}]}]
  )
  assert read_answers(older, QUESTIONS, model="renamed").turns["q2"] == ["bye"]
  bad = _jsonl(tmp_path / "bad.jsonl", [{"question_id": "q1"}])
  with pytest.raises(ValueError, match="bad.jsonl: row 1"):
    read_answers(bad, QUESTIONS)


def test_alpaca_eval_layout_is_matched_by_instruction(tmp_path):
  path = tmp_path / "outputs.json"
  path.write_text(
    json.dumps(
      [
        {"instruction": "Say bye", "output": "Bye!", "generator": "g"},
        {"instruction": "unrelated", "output": "x", "generator": "g"},
      ]
    )
  )
  got = read_answers(str(path), QUESTIONS)
  assert got.turns == {"q2": ["Bye!"]} and got.model == "g"


def test_scaling_output_folder_gives_answers_and_the_grid_point(tmp_path):
  run = tmp_path / "grid_d8_f16_e1"
  run.mkdir()
  _jsonl(run / "results.jsonl", [{"id": "q1", "best": {"text": "best answer"}, "token_multiple": 15.0}])
  (run / "summary.json").write_text(
    json.dumps(
      {
        "mean_token_multiple": 15.5,
        "config": {
          "search": {
            "mode": "feedback_edit",
            "num_drafts": 8,
            "num_feedbacks": 16,
            "max_effective_feedbacks": 16,
            "num_edits": 1,
          },
          "policy": {"path": "p"},
          "edit_model": {"path": "e"},
        },
      }
    )
  )
  got = read_answers(str(run), QUESTIONS)
  assert got.turns == {"q1": ["best answer"]} and got.model == "grid_d8_f16_e1"
  assert got.scaling["token_multiple"] == 15.5 and got.scaling["drafts"] == 8
  assert got.scaling["feedbacks"] == 16 and got.scaling["edits"] == 1
  assert got.scaling["roles"]["edit_model"] == "e"


def test_jsonl_appender_drops_a_partial_last_line(tmp_path):
  path = tmp_path / "log.jsonl"
  log = JsonlAppender(str(path))
  log.append([{"a": 1}, {"a": 2}])
  with open(path, "a") as f:
    f.write('{"a": 3, "trunc')  # a crash in the middle of a write
  assert JsonlAppender(str(path)).read() == [{"a": 1}, {"a": 2}]
  JsonlAppender(str(path)).append([{"a": 4}])
  assert JsonlAppender(str(path)).read() == [{"a": 1}, {"a": 2}, {"a": 4}]
  with open(path, "a") as f:
    f.write('not json\n{"a": 5}\n')
  with pytest.raises(ValueError, match="middle of the file"):
    JsonlAppender(str(path)).read()


def test_a_missing_benchmark_file_is_named(monkeypatch, tmp_path):
  monkeypatch.setenv("HELPSTEER_CACHE", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    sources.arena_hard_questions(path=str(tmp_path / "nowhere.jsonl"))


def test_sampled_answers_are_keyed_by_question_not_by_batch():
  from helpsteer_jax.eval.answers import generate_answers, make_generate_fn
  from helpsteer_jax.eval.sources import Question
  from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

  questions = [
    Question("q1", ("Name a colour.",), "x"),
    Question("q2", ("Say hi.", "Again?"), "x"),
    Question("q3", ("Count to three.",), "x"),
  ]
  generate = make_generate_fn(tiny_chat_model(), smollm2_tokenizer(), max_new_tokens=6, top_p=0.9, batch_size=4)
  names = []

  def recording(conversations, temperature, keys):
    names.append(list(keys))
    return generate(conversations, temperature, keys)

  runs = []
  for batch_size, subset in ((3, questions), (1, questions[1:2])):
    out = []
    generate_answers(subset, recording, "m", lambda q: 1.0, out.extend, batch_size=batch_size)
    runs.append({r["question_id"]: r for r in out})
  assert runs[1]["q2"] == runs[0]["q2"]  # alone or beside others, first and second turn alike
  # Keys name the question and turn, never the batch.
  assert names == [["0/q1/turn0", "0/q2/turn0", "0/q3/turn0"], ["0/q2/turn1"], ["0/q2/turn0"], ["0/q2/turn1"]]
