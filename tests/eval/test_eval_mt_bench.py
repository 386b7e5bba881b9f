"""MT-Bench: the rating parser on odd judge output, judge prompts from the bundled file, the
per-category table, and two-turn answering with the category temperatures."""

import pytest

from helpsteer_jax.eval import mt_bench as mt
from helpsteer_jax.eval import sources
from helpsteer_jax.eval.answers import generate_answers
from helpsteer_jax.eval.judges.base import ChatReply


@pytest.mark.parametrize(
  "text, rating",
  [
    ("Rating: [[7]]", 7.0),
    ("[[8.5]]", 8.5),
    ("The answer is accurate. [[ 9 ]]", 9.0),
    ("Rating: [[7/10]]", 7.0),
    # Two ratings in one judgment: the first counts, as in FastChat's grader.
    ("Turn 1 deserves [[8]]; after the correction I would say [[6]].", 8.0),
    ('As asked, I use the format "Rating: [[5]]". ... Final: [[3]]', 5.0),
    ("[[7.]]", 7.0),  # FastChat's number pattern accepts a trailing dot
    ("single brackets: [8]", 8.0),
    ("Rating: 6", 6.0),
    ("rating of 4/10", 4.0),
    # Double brackets are preferred over single ones wherever they appear.
    ("[[6]] although [2] says otherwise", 6.0),
    ("[[rating]]", None),  # the placeholder echoed, no number
    ("no rating given", None),
    ("", None),
    ("[[0]]", None),  # outside 1-10: a failed grading
    ("[[11]]", None),
  ],
)
def test_parse_rating(text, rating):
  assert mt.parse_rating(text) == rating


def test_category_temperatures():
  assert mt.temperature_for("writing") == 0.7 and mt.temperature_for("roleplay") == 0.7
  assert all(mt.temperature_for(c) == 0.0 for c in ("extraction", "math", "coding", "reasoning"))
  assert mt.temperature_for("stem") == 0.1 and mt.temperature_for("humanities") == 0.1


def test_judge_prompts_from_the_bundled_file(bundled_data):
  prompts = sources.mt_bench_judge_prompts()
  questions = {q.id: q for q in sources.mt_bench_questions()}
  refs = sources.mt_bench_references()
  assert len(questions) == 80 and all(len(q.turns) == 2 for q in questions.values())
  math_q = next(q for q in questions.values() if q.category == "math")
  item = mt.GradeItem(math_q.id, "math", math_q.turns, ("ANSWER ONE", "ANSWER TWO"), tuple(refs[math_q.id]))
  name, messages = mt.judge_messages(prompts, item, 1)
  assert name == "single-math-v1"
  assert refs[math_q.id][0] in messages[1]["content"] and "ANSWER ONE" in messages[1]["content"]
  name, messages = mt.judge_messages(prompts, item, 2)
  assert name == "single-math-v1-multi-turn"
  user = messages[1]["content"]
  assert refs[math_q.id][1] in user and "ANSWER ONE" in user and "ANSWER TWO" in user
  assert math_q.turns[1] in user
  writing = next(q for q in questions.values() if q.category == "writing")
  name, messages = mt.judge_messages(prompts, mt.GradeItem(writing.id, "writing", writing.turns, ("A1", "A2")), 1)
  assert name == "single-v1" and "[[rating]]" in messages[1]["content"]
  with pytest.raises(ValueError, match="reference"):
    mt.judge_messages(prompts, mt.GradeItem(math_q.id, "math", math_q.turns, ("a", "b")), 1)


class _Judge:
  name = "fake"

  def __init__(self, texts):
    self.texts = list(texts)

  def chat(self, requests):
    return [ChatReply(self.texts.pop(0)) for _ in requests]


def test_judgment_records_and_table():
  prompts = {
    n: {"name": n, "system_prompt": "S", "prompt_template": "{question} {answer} [[rating]]"}
    for n in ("single-v1", "single-math-v1")
  }
  prompts.update(
    {
      n + "-multi-turn": {
        "name": n,
        "system_prompt": "S",
        "prompt_template": "{question_1} {answer_1} {question_2} {answer_2}",
      }
      for n in ("single-v1", "single-math-v1")
    }
  )
  items = [
    mt.GradeItem("1", "writing", ("q1", "q2"), ("a1", "a2")),
    mt.GradeItem("2", "math", ("q1", "q2"), ("a1", "a2"), ("r1", "r2")),
  ]
  judge = _Judge(["[[8]]", "[[6]]", "Rating: [[4]]", "I cannot rate this."])
  records = mt.judge_with_chat(judge, items, prompts, "m")
  assert [(r["question_id"], r["turn"], r["score"]) for r in records] == [
    ("1", 1, 8.0),
    ("1", 2, 6.0),
    ("2", 1, 4.0),
    ("2", 2, mt.FAILED),
  ]
  assert records[0]["judge"] == ["fake", "single-v1"] and records[3]["judge"] == ["fake", "single-math-v1-multi-turn"]
  table = mt.category_table(records, {"1": "writing", "2": "math"})
  rows = {r["category"]: r for r in table}
  assert [r["category"] for r in table] == ["writing", "math", "overall"]
  assert rows["writing"]["turn_1"] == 8 and rows["writing"]["turn_2"] == 6 and rows["writing"]["average"] == 7
  assert rows["math"]["turn_2"] is None and rows["math"]["failed"] == 1
  assert rows["overall"]["average"] == pytest.approx(6.0) and rows["overall"]["failed"] == 1
  assert "| overall | 6.00 | 6.00 | 6.00 | 3 | 1 |" in mt.table_markdown(table)


def test_two_turn_answers_use_the_category_temperature_and_the_first_answer():
  calls = []

  def fake_generate(conversations, temperature, seed):
    calls.append((temperature, conversations))
    return [(f"answer {len(c)}", 3, True) for c in conversations]

  questions = [
    sources.Question("81", ("write", "rewrite"), "writing"),
    sources.Question("111", ("solve", "explain"), "math"),
  ]
  out = []
  generate_answers(questions, fake_generate, "m", lambda q: mt.temperature_for(q.category), out.extend)
  assert [r["turns"] for r in out] == [["answer 1", "answer 3"], ["answer 1", "answer 3"]]
  temps = sorted({t for t, _ in calls})
  assert temps == [0.0, 0.7]
  second_turn = [c for t, convs in calls for c in convs if len(c) == 3]
  assert second_turn[0][1] == {"role": "assistant", "content": "answer 1"}
