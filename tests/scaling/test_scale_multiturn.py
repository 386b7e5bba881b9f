"""A multi-turn benchmark through the search: MT-Bench's two turns, each a full search, the second
with the search's own chosen first answer in the conversation; a resume starts at the unfinished
turn; `evaluate` grades both turns from the search's folder."""

import json

import pytest

from helpsteer_jax import scale
from helpsteer_jax.scaling.results import read_records, write_records
from helpsteer_jax.testing.eval_runs import eval_config
from helpsteer_jax.testing.search_runs import search_config

# Runs searches or compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _search_config(model_dir, out):
  config = search_config(model_dir, "", out)
  config.prompts.source = "mt_bench"
  config.prompts.start = 19  # questions 100 (roleplay) and 101 (reasoning)
  config.prompts.limit = 2
  return config


def test_each_turn_is_a_search_over_the_chosen_answers_and_a_resume_starts_at_the_unfinished_turn(
  model_dir, tmp_path, bundled_data
):
  out = tmp_path / "search"
  summary = scale.run_search(_search_config(model_dir, out))
  records = read_records(str(out))
  # Written turn by turn: every first turn, then every second.
  assert [(r["id"], r["question_id"], r["turn"]) for r in records] == [
    ("100", "100", 1),
    ("101", "101", 1),
    ("100/turn2", "100", 2),
    ("101/turn2", "101", 2),
  ]
  assert summary["num_prompts"] == 4
  first, second = records[0], records[2]
  assert second["conversation"] == first["conversation"] + [
    {"role": "assistant", "content": first["best"]["text"]},
    second["conversation"][-1],
  ]
  assert second["conversation"][-1]["role"] == "user" and len(second["conversation"]) == 3

  # A run stopped after the first turns: the rerun answers only the second turns, as before.
  write_records([r for r in records if r["turn"] == 1], str(out / "results.jsonl"))
  resumed = scale.run_search(_search_config(model_dir, out))
  assert resumed["num_prompts"] == 4
  assert [json.dumps(r, sort_keys=True) for r in read_records(str(out))] == [
    json.dumps(r, sort_keys=True) for r in records
  ]


def test_evaluate_grades_both_turns_of_a_multi_turn_search(model_dir, judge_server, tmp_path, bundled_data):
  from helpsteer_jax.eval.runner import run_evaluation

  out = tmp_path / "search"
  scale.run_search(_search_config(model_dir, out))
  config = eval_config("mt_bench", model_dir, judge_server, limit=2, start=19).unlock()
  config.model.answers = str(out)
  result = run_evaluation(config, str(tmp_path / "eval"))
  judged = [json.loads(line) for line in open(tmp_path / "eval" / "judgments.jsonl")]
  assert [(j["question_id"], j["turn"]) for j in judged] == [("100", 1), ("100", 2), ("101", 1), ("101", 2)]
  from helpsteer_jax.eval.answers import read_answers
  from helpsteer_jax.eval.sources import mt_bench_questions

  records = {(r["question_id"], r["turn"]): r["best"]["text"] for r in read_records(str(out))}
  answers = read_answers(str(out), mt_bench_questions(start=19, limit=2))
  assert answers.turns == {q: [records[(q, 1)], records[(q, 2)]] for q in ("100", "101")}
  assert result["counts"]["judged"] == 4 and result["headline"]["value"] > 0
