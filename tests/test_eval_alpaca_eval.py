"""AlpacaEval 2: preference parsing, order randomisation, and the length-controlled win rate on
synthetic judgments whose length bias is known."""

import math

import numpy as np
import pytest

from helpsteer_jax.eval import alpaca_eval as ae
from helpsteer_jax.eval import sources
from helpsteer_jax.eval.judges.base import ChatReply
from helpsteer_jax.eval.logistic import sigmoid


def _annotations(rng, n, quality=0.0, length_bias=2.5, mean_extra_chars=600.0, soft=False, difficulty=None):
  """Judgments from a judge whose preference = sigmoid(quality + bias * tanh(std. length diff))."""
  len_base = rng.normal(1500, 400, n).clip(100)
  len_model = (len_base + rng.normal(mean_extra_chars, 700, n)).clip(50)
  delta = len_model - len_base
  logit = quality + length_bias * np.tanh(delta / delta.std())
  if difficulty is not None:
    logit = logit + difficulty
  p = sigmoid(logit)
  y = p if soft else (rng.random(n) < p).astype(float)
  return [{"question_id": str(i), "model_win_prob": float(y[i]), "len_model": int(len_model[i]),
           "len_baseline": int(len_base[i])} for i in range(n)]


def test_length_biased_judge_lc_is_closer_to_50_than_raw():
  rng = np.random.default_rng(0)
  r = ae.win_rates(_annotations(rng, 805), rounds=50)
  assert r["win_rate"] > 70  # longer outputs win under a length-biased judge
  assert abs(r["lc_win_rate"] - 50) < abs(r["win_rate"] - 50) / 3
  assert r["lc_ci_low"] <= 50 <= r["lc_ci_high"]
  assert r["win_rate_ci_low"] < r["win_rate"] < r["win_rate_ci_high"]


def test_no_length_effect_leaves_lc_equal_to_raw():
  rng = np.random.default_rng(1)
  r = ae.win_rates(_annotations(rng, 805, quality=math.log(3), length_bias=0.0, soft=True), rounds=0)
  assert r["win_rate"] == pytest.approx(75.0, abs=0.5)
  assert r["lc_win_rate"] == pytest.approx(75.0, abs=1.0)


def test_difficulty_term_is_used_when_given():
  rng = np.random.default_rng(2)
  n = 805
  gamma = rng.normal(0, 1.5, n)
  anns = _annotations(rng, n, quality=0.5, length_bias=1.0, soft=True, difficulty=gamma)
  with_d = ae.win_rates(anns, {str(i): float(g) for i, g in enumerate(gamma)}, rounds=0)
  # Truth at zero length difference: mean over instructions of sigmoid(0.5 + gamma_i).
  truth = 100 * float(np.mean(sigmoid(0.5 + gamma)))
  assert with_d["difficulty"] and with_d["lc_win_rate"] == pytest.approx(truth, abs=1.5)


def test_instruction_difficulty_from_other_models():
  probs = {"a": {"0": 0.9, "1": 0.1, "2": 0.5}, "b": {"0": 0.8, "1": 0.2, "2": 0.5}, "self": {"0": 0.0}}
  d = ae.instruction_difficulty(probs, exclude="self")
  assert d["0"] > d["2"] > d["1"] and abs(sum(d.values())) < 1e-9


def test_parse_preference():
  assert ae.parse_preference("m", None, model_is_m=True) == 1.0
  assert ae.parse_preference("M", None, model_is_m=True) == 0.0
  assert ae.parse_preference("`M`", None, model_is_m=False) == 1.0
  assert ae.parse_preference("The better output is model M.", None, model_is_m=False) == 1.0
  assert ae.parse_preference("Both are fine", None, model_is_m=True) is None
  assert ae.parse_preference("Maybe", None, model_is_m=True) is None  # a word, not the identifier
  top = [{"m": math.log(0.6), " M": math.log(0.3), "x": math.log(0.1)}]
  assert ae.parse_preference("m", top, model_is_m=False) == pytest.approx(1 / 3)


class _Judge:
  name = "fake"

  def __init__(self):
    self.requests = []

  def chat(self, requests):
    self.requests.extend(requests)
    return [ChatReply("m") for _ in requests]


def test_order_is_randomised_per_instruction_and_recorded():
  judge = _Judge()
  items = [(str(i), f"instruction {i}", "MODEL", "BASE") for i in range(40)]
  records = ae.judge_with_chat(judge, items, "m", "base", seed=0)
  firsts = [r["model_first"] for r in records]
  assert 5 < sum(firsts) < 35  # both orders occur
  for r, req in zip(records, judge.requests):
    text = req.messages[1][1]
    assert (text.index("MODEL") < text.index("BASE")) == r["model_first"]
    assert r["model_win_prob"] == (1.0 if r["model_first"] else 0.0)  # the judge always said "m"
    assert r["len_model"] == 5 and r["len_baseline"] == 4
  assert records == ae.judge_with_chat(_Judge(), items, "m", "base", seed=0)  # seeded: same order


def test_bundled_alpaca_eval_set(bundled_data):
  questions, baseline, name = sources.alpaca_eval_set()
  assert len(questions) == 805 and len(baseline) == 805 and name == "gpt4_1106_preview"
  sub, sub_base, _ = sources.alpaca_eval_set(start=10, limit=5)
  assert [q.id for q in sub] == [str(i) for i in range(10, 15)] and set(sub_base) == {q.id for q in sub}
