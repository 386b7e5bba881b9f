"""Arena-Hard: verdict parsing, the v0.1 judgment format, and the Bradley-Terry scorer on
synthetic battles whose answer is known."""

import json
import math
import re

import numpy as np
import pytest

from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.eval import arena_hard as ah
from helpsteer_jax.eval.judges.base import ChatReply

# Game 1 shows the baseline as A, game 2 shows the model as A: the labels that mean "model wins".
MODEL_WINS = ("B>A", "A>B")
MODEL_LOSES = ("A>B", "B>A")


def _record(qid, g1, g2, model="m"):
  return {
    "question_id": str(qid),
    "model": model,
    "judge": "synthetic",
    "games": [{"user_prompt": "", "judgment": "", "score": g1}, {"user_prompt": "", "judgment": "", "score": g2}],
  }


def _bernoulli_records(p_win, n_questions, rng, model="m"):
  """Each game independently won by the model with probability p_win (no ties, no strong)."""
  out = []
  for q in range(n_questions):
    wins = rng.random(2) < p_win
    out.append(
      _record(q, MODEL_WINS[0] if wins[0] else MODEL_LOSES[0], MODEL_WINS[1] if wins[1] else MODEL_LOSES[1], model)
    )
  return out


@pytest.mark.parametrize(
  "text, label",
  [
    ("My final verdict is tie: [[A=B]]", "A=B"),
    ("... [[A>>B]]", "A>>B"),
    ("[[ B > A ]]", "B>A"),
    ("reversed form [[B<A]]", "A>B"),
    ("[[A<<B]]", "B>>A"),
    ("restated twice: [[B>>A]] ... so [[B>>A]]", "B>>A"),
    ("two different verdicts [[A>B]] then [[B>A]]", None),
    ("no verdict at all", None),
    ("single brackets [A>B] do not count", None),
    ("", None),
  ],
)
def test_parse_verdict(text, label):
  assert ah.parse_verdict(text) == label


def test_all_wins_scores_near_100_and_all_losses_near_0():
  wins = [_record(q, "B>>A", "A>>B") for q in range(50)]
  losses = [_record(q, "A>>B", "B>>A") for q in range(50)]
  s_win = ah.score_judgments(wins, rounds=10)["m"]
  s_loss = ah.score_judgments(losses, rounds=10)["m"]
  assert s_win["score"] > 99.9 and s_win["ci_low"] > 99.9
  assert s_loss["score"] < 0.1
  assert s_win["num_battles"] == 50 * 2 * ah.STRONG_WEIGHT  # strong verdicts count 3 times


def test_symmetric_battles_score_50_with_the_baseline_at_1000():
  # Half the questions won by each side, both orders: exactly even.
  records = [_record(q, *(MODEL_WINS if q % 2 else MODEL_LOSES)) for q in range(200)]
  s = ah.score_judgments(records, rounds=50)["m"]
  assert s["score"] == pytest.approx(50.0, abs=1e-6)
  assert s["elo"] == pytest.approx(1000.0, abs=1e-4)
  assert s["ci_low"] < 50 < s["ci_high"]
  ties = [_record(q, "A=B", "A=B") for q in range(30)]
  assert ah.score_judgments(ties, rounds=5)["m"]["score"] == pytest.approx(50.0, abs=1e-6)


def test_elo_scale_and_ties_count_half():
  # 3 wins per loss -> p = 0.75 -> Elo = 1000 + 400 * log10(3).
  records = [_record(q, *(MODEL_WINS if q % 4 else MODEL_LOSES)) for q in range(400)]
  s = ah.score_judgments(records, rounds=0)["m"]
  assert s["score"] == pytest.approx(75.0, abs=0.01)
  assert s["elo"] == pytest.approx(1000 + 400 * math.log10(3), abs=0.1)
  # One win and one tie per question -> (1 + 0.5) / 2 = 0.75 as well.
  mixed = [_record(q, "B>A", "A=B") for q in range(100)]
  assert ah.score_judgments(mixed, rounds=0)["m"]["score"] == pytest.approx(75.0, abs=0.01)


def test_failed_games_are_left_out():
  records = [_record(q, "B>A", None) for q in range(20)] + [_record(20, "A>B", "B>A")]
  s = ah.score_judgments(records, rounds=0)["m"]
  assert s["num_battles"] == 22 and s["failed_games"] == 20


def test_bootstrap_interval_covers_the_truth():
  rng = np.random.default_rng(0)
  truth = 70.0
  s = ah.score_judgments(_bernoulli_records(0.7, 500, rng), rounds=100, seed=42)["m"]
  assert s["ci_low"] <= truth <= s["ci_high"]
  assert abs(s["score"] - truth) < 4 and 2 < s["ci_high"] - s["ci_low"] < 12
  # Coverage over independent replicates: a 95% interval should cover the truth nearly always.
  covered = 0
  for rep in range(12):
    r = ah.score_judgments(_bernoulli_records(0.7, 300, np.random.default_rng(100 + rep)), rounds=40, seed=rep)["m"]
    covered += r["ci_low"] <= truth <= r["ci_high"]
  assert covered >= 10


def test_bootstrap_is_seeded():
  records = _bernoulli_records(0.6, 100, np.random.default_rng(1))
  a = ah.score_judgments(records, rounds=30, seed=7)["m"]
  b = ah.score_judgments(records, rounds=30, seed=7)["m"]
  assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])


def test_several_models_are_scored_against_one_baseline():
  rng = np.random.default_rng(3)
  records = _bernoulli_records(0.8, 200, rng, "strong") + _bernoulli_records(0.3, 200, rng, "weak")
  scores = ah.score_judgments(records, rounds=10)
  assert set(scores) == {"strong", "weak"}
  assert scores["strong"]["score"] > 70 and scores["weak"]["score"] < 40


def test_judgment_file_round_trip_and_rescoring(tmp_path):
  rng = np.random.default_rng(5)
  records = _bernoulli_records(0.65, 40, rng)
  log = JsonlAppender(str(tmp_path / "judgments.jsonl"))
  log.append(records[:20])
  log.append(records[20:])
  # arena-hard-auto lines carry extra fields; they are read all the same.
  extra = dict(_record("x1", "A>>B", "B>>A"), tstamp=1.0)
  with open(log.path, "a") as f:
    f.write(json.dumps(extra) + "\n")
  back = JsonlAppender(log.path).read()
  assert back[:40] == records and back[40]["tstamp"] == 1.0
  assert ah.score_judgments(back, rounds=5)["m"]["num_questions"] == 41
  with pytest.raises(ValueError, match="2 games"):
    ah.score_judgments([{"question_id": "1", "model": "m", "games": [{"score": "A>B"}]}])
  with pytest.raises(ValueError, match="not one of"):
    ah.score_judgments([_record(1, "A>>>B", "A>B")])


class _FakeChatJudge:
  name = "fake-judge"

  def __init__(self):
    self.requests = []

  def chat(self, requests):
    self.requests.extend(requests)
    return [ChatReply("reasoning... [[B>A]]") for _ in requests]


def test_judge_with_chat_plays_both_orders():
  judge = _FakeChatJudge()
  items = [ah.PairItem("q1", "What is 2+2?", "MODEL ANSWER", "BASELINE ANSWER")]
  (record,) = ah.judge_with_chat(judge, items, "m")
  assert record["judge"] == "fake-judge" and record["model"] == "m"
  g1, g2 = record["games"]
  assert g1["user_prompt"].index("BASELINE ANSWER") < g1["user_prompt"].index("MODEL ANSWER")
  assert g2["user_prompt"].index("MODEL ANSWER") < g2["user_prompt"].index("BASELINE ANSWER")
  assert judge.requests[0].messages[0] == ("system", ah.JUDGE_SYSTEM_PROMPT)
  # "B>A" in both games: the model wins game 1 and loses game 2.
  battles = ah.battles_from_judgments([record])
  assert list(battles.winner) == ["model_b", "model_a"]


class _FakeScoreJudge:
  name = "fake-rm"

  def score(self, conversations, responses):
    return [float(len(r)) for r in responses]


def test_score_judge_verdicts_follow_the_margins():
  items = [ah.PairItem("q1", "Q", "a much longer model answer", "short"), ah.PairItem("q2", "Q", "same", "same")]
  records = ah.judge_with_scores(_FakeScoreJudge(), items, "m", tie_margin=0.5, strong_margin=5)
  assert [g["score"] for g in records[0]["games"]] == ["B>>A", "A>>B"]
  assert [g["score"] for g in records[1]["games"]] == ["A=B", "A=B"]


def _styled_variant(text, rng):
  """A model answer made from a baseline answer: longer or shorter, more or less markdown."""
  if rng.random() < 0.5:
    text = text + "\n\nIn more detail: " + text[: int(len(text) * rng.uniform(0.2, 1.0))]
  else:
    text = text[: max(20, int(len(text) * rng.uniform(0.4, 0.9)))]
  if rng.random() < 0.4:
    text = "## Overview\n" + text
  if rng.random() < 0.5:
    text = text + "\n\n**Key point:** see above.\n- first\n- second"
  return text


def _style_judgments(baseline, rng, quality=0.3, length_pull=1.5):
  """Judgments by a judge that likes longer and bolder answers on top of the model's quality."""
  answers = {"m": {}, ah.BASELINE: dict(baseline)}
  records = []
  for qid, text in baseline.items():
    mine = _styled_variant(text, rng)
    answers["m"][qid] = mine
    ratio = (len(mine) - len(text)) / (len(mine) + len(text))
    p_model = 1 / (1 + math.exp(-(quality + length_pull * ratio + 0.5 * ("**" in mine))))
    games = []
    for g in range(2):
      u = rng.random()
      if u < 0.1:
        games.append("A=B")
      elif (u - 0.1) / 0.9 < p_model:
        games.append(("B>>A", "A>>B")[g] if rng.random() < 0.2 else MODEL_WINS[g])
      else:
        games.append(MODEL_LOSES[g])
    records.append(_record(qid, *games))
  return records, answers


def _reference_style_score(records, answers):
  """arena-hard-auto's style-controlled score, worked out here with scikit-learn: features
  (a - b) / (a + b + 1) centred and scaled, +-log(10) rating columns for both models, each battle
  fitted twice (a tie as one win and one loss), LogisticRegression(C=1) without intercept."""
  linear_model = pytest.importorskip("sklearn.linear_model")
  battles = ah.battles_from_judgments(records)
  a = np.stack([ah.style_counts(answers[m][q]) for m, q in zip(battles.model_a, battles.question_id)])
  b = np.stack([ah.style_counts(answers[m][q]) for m, q in zip(battles.model_b, battles.question_id)])
  f = (a - b) / (a + b + 1)
  f = (f - f.mean(0)) / f.std(0)
  n = len(battles)
  x = np.concatenate([np.full((n, 1), math.log(10)), np.full((n, 1), -math.log(10)), f], axis=1)  # [base, m]
  y1 = (battles.winner == "model_a").astype(float)
  y1[battles.winner == "tie"] = 1.0
  y2 = (battles.winner == "model_a").astype(float)  # the tie's second copy is a loss
  model = linear_model.LogisticRegression(fit_intercept=False, tol=1e-12, max_iter=10000)
  model.fit(np.concatenate([x, x]), np.concatenate([y1, y2]))
  coef = model.coef_[0]
  elo_base, elo_m = 400 * coef[0], 400 * coef[1]
  return 100 / (1 + 10 ** ((elo_base - elo_m) / 400)), coef[2:]


def test_style_control_matches_arena_hard_on_the_bundled_questions(bundled_data):
  from helpsteer_jax.eval import sources

  baseline = sources.arena_hard_baseline()
  assert len(baseline) == 500
  records, answers = _style_judgments(baseline, np.random.default_rng(11))
  ours = ah.score_judgments(records, rounds=0, style_control=True, answers=answers)["m"]
  ref_score, ref_coef = _reference_style_score(records, answers)
  assert ours["score"] == pytest.approx(ref_score, abs=1e-3)
  assert np.allclose([ours["style_coef"][k] for k in ah.STYLE_FEATURES], ref_coef, atol=1e-4)
  assert ours["style_length_unit"] == "word pieces"
  plain = ah.score_judgments(records, rounds=0)["m"]
  assert ours["style_coef"]["length"] > 0.2  # the judge's length preference is found...
  assert ours["score"] != pytest.approx(plain["score"], abs=0.5)  # ...and moves the score
  # With the bootstrap the interval brackets the point estimate.
  boot = ah.score_judgments(records, rounds=10, style_control=True, answers=answers)["m"]
  assert boot["ci_low"] <= boot["score"] <= boot["ci_high"]


def test_style_counts_from_answer_metadata_are_used_as_they_are():
  meta = {
    "token_len": 120,
    "header_count": {"h1": 1, "h2": 2},
    "list_count": {"ordered": 3, "unordered": 0},
    "bold_count": {"**": 4, "__": 1},
  }
  assert list(ah.style_counts_from_metadata(meta, "x")) == [120, 3, 3, 5]
  with pytest.raises(ValueError, match="token_len"):
    ah.style_counts_from_metadata({"header_count": 1}, "answers.jsonl:3")


def test_style_features_without_spread_are_reported_not_scored():
  rng = np.random.default_rng(4)
  answers = {"m": {}, ah.BASELINE: {}}
  records = []
  for q in range(100):
    answers[ah.BASELINE][str(q)] = "word " * 100
    answers["m"][str(q)] = "word " * int(rng.integers(50, 200))  # no markdown anywhere
    records.append(_record(q, *(MODEL_WINS if rng.random() < 0.6 else MODEL_LOSES)))
  with pytest.raises(ah.DegenerateFitError, match=r"\['headers', 'lists', 'bold'\]"):
    ah.score_judgments(records, rounds=0, style_control=True, answers=answers)


def test_a_singular_style_design_is_reported_not_scored():
  rng = np.random.default_rng(5)
  answers = {"m": {}, ah.BASELINE: {}}
  records = []
  for q in range(100):
    k = int(rng.integers(0, 3))  # as many headers as list items as bold spans: three equal columns
    answers[ah.BASELINE][str(q)] = "word " * 100
    answers["m"][str(q)] = "word " * int(rng.integers(50, 200)) + "\n# h\n- **b**\n" * k
    records.append(_record(q, *(MODEL_WINS if rng.random() < 0.6 else MODEL_LOSES)))
  with pytest.raises(ah.DegenerateFitError, match="rank"):
    ah.score_judgments(records, rounds=0, style_control=True, answers=answers)


def test_style_counts_follow_arena_hard_patterns():
  text = (
    "# Title\n## Sub\n####### not a header\n#no space\n\n- a\n* b\n+ c\n1. d\n  2. e\n-no space\n\n"
    "**bold** and __bold__ and ** not bold\n**across\nlines**\n"
    "```\n# not a header\n- not a list\n**not bold**\n```"
  )
  length, headers, lists, bold = ah.style_counts(text)
  assert (headers, lists, bold) == (2, 5, 2)
  assert length == len(re.findall(r"\w+|[^\w\s]", text))
