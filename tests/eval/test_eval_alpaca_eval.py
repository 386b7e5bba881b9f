"""AlpacaEval 2: preference parsing, order randomisation, and the length-controlled win rate on
synthetic judgments whose length bias is known."""

import json
import logging
import math

import numpy as np
import pytest

from helpsteer_jax.eval import alpaca_difficulty, sources
from helpsteer_jax.eval import alpaca_eval as ae
from helpsteer_jax.eval.alpaca_difficulty import read_difficulty_table
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
  return [
    {
      "question_id": str(i),
      "model_win_prob": float(y[i]),
      "len_model": int(len_model[i]),
      "len_baseline": int(len_base[i]),
    }
    for i in range(n)
  ]


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


N = 805


def _write_table(path, rng, gamma):
  """A small table in AlpacaEval's df_gamed.csv layout: a verbose and a concise gamed baseline."""
  lines = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
  for name, shift in (("gpt4_1106_preview_verbose", 900.0), ("gpt4_1106_preview_concise", -900.0)):
    delta = -(rng.normal(shift, 400, len(gamma)))  # baseline - gamed output length
    std = delta / delta.std(ddof=1)
    pref = sigmoid(-1.0 * np.tanh(std) + 0.7 * gamma + rng.normal(0, 0.3, len(gamma)))
    for i in range(len(gamma)):
      p = "" if i % 97 == 3 else f"{pref[i]:.6f}"  # a few rows without a preference
      lines.append(f"{name},{i},{p},{std[i]:.6f},{gamma[i]:.6f},False")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _lc_case(tmp_path, seed, soft=True):
  rng = np.random.default_rng(seed)
  gamma = rng.normal(0, 1.2, N)
  table = _write_table(tmp_path / f"df_gamed_{seed}.csv", rng, gamma)
  anns = _annotations(rng, N, quality=rng.normal(0, 0.8), length_bias=1.5, soft=soft, difficulty=0.8 * gamma)
  for i in range(0, N, 101):
    anns[i]["model_win_prob"] = None  # failed annotations
  return anns, table


def _reference_lc(anns, table_path):
  """AlpacaEval's length_controlled_v1 LC win rate, worked out here from its published recipe
  with scikit-learn: L1 logistic regression (liblinear, no intercept) on soft targets as
  weighted 0/1 rows, C from logspace(-4, 4, 10) by GroupKFold(5) on the weighted log loss."""
  sklearn = pytest.importorskip("sklearn")
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import GroupKFold

  new_api = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
  l1 = {"l1_ratio": 1.0} if new_api else {"penalty": "l1"}
  rows = [line.split(",") for line in open(table_path).read().split("\n")[1:] if line]
  g_pref = np.array([float(r[2]) if r[2] else np.nan for r in rows])
  g_x = np.array([[np.tanh(float(r[3])), float(r[4]), 0.0] for r in rows])
  difficulty = {}
  for r in rows:
    difficulty.setdefault(r[1], float(r[4]))
  delta = np.array([a["len_baseline"] - a["len_model"] for a in anns], dtype=float)
  std = delta / delta.std(ddof=1)
  gamma = np.array([difficulty[a["question_id"]] for a in anns])
  m_x = np.stack([np.tanh(std), gamma, np.ones(len(anns))], axis=1)
  m_pref = np.array([np.nan if a["model_win_prob"] is None else a["model_win_prob"] for a in anns])
  x = np.concatenate([g_x, m_x])
  p = np.concatenate([g_pref, m_pref])
  w = np.concatenate([np.full(len(g_x), 0.2 / 2), np.ones(len(m_x))])
  keep = ~np.isnan(p)
  x, p, w = x[keep], p[keep], w[keep]
  groups = np.arange(len(p))
  xx, yy, ww = np.concatenate([x, x]), np.r_[np.ones(len(p)), np.zeros(len(p))], np.r_[w * p, w * (1 - p)]
  gg = np.concatenate([groups, groups])

  def fit(idx, c):
    model = LogisticRegression(C=c, solver="liblinear", fit_intercept=False, tol=1e-8, **l1)
    return model.fit(xx[idx], yy[idx], sample_weight=ww[idx]).coef_[0]

  cs = np.logspace(-4, 4, 10)
  score = np.zeros(len(cs))
  for train, test in GroupKFold(n_splits=5).split(xx, yy, gg):
    rows_test = np.unique(gg[test])
    for j, c in enumerate(cs):
      q = np.clip(sigmoid(x[rows_test] @ fit(train, c)), 1e-15, 1 - 1e-15)
      pt, wt = p[rows_test], w[rows_test]
      score[j] += np.mean(wt * (pt * np.log(q) + (1 - pt) * np.log(1 - q)))  # minus the loss
  coef = fit(np.arange(len(xx)), cs[int(np.argmax(score))])
  x_test = m_x.copy()
  x_test[:, 0] = 0.0
  return 100 * float(np.mean(sigmoid(x_test @ coef)))


@pytest.mark.parametrize("seed, soft", [(0, True), (1, False)])
def test_lc_equals_the_published_recipe(tmp_path, seed, soft):
  anns, table_path = _lc_case(tmp_path, seed, soft)
  table = read_difficulty_table(table_path)
  r = ae.win_rates(anns, table, rounds=0)
  assert r["lc_comparable"] and r["lc_glm"] == "length_controlled_v1" and "lc_note" not in r
  assert r["lc_win_rate"] == pytest.approx(_reference_lc(anns, table_path), abs=0.05)
  assert r["failed"] == len(range(0, N, 101)) and r["lc_standard_error"] > 0


def test_lc_interval_and_the_length_bias_it_removes(tmp_path):
  anns, table_path = _lc_case(tmp_path, 2)
  r = ae.win_rates(anns, read_difficulty_table(table_path), rounds=20)
  assert r["lc_ci_low"] <= r["lc_win_rate"] <= r["lc_ci_high"]
  assert r["lc_coef"]["length"] < 0  # longer than the baseline (negative delta) wins more


def test_the_hub_table_is_downloaded_through_huggingface_hub(tmp_path, monkeypatch):
  import huggingface_hub

  anns, table_path = _lc_case(tmp_path, 3)
  calls = []

  def fake_download(**kwargs):
    calls.append(kwargs)
    return table_path

  monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
  table, note = alpaca_difficulty.resolve_difficulty_table("")
  assert note == "" and table.source == alpaca_difficulty.HUB_SOURCE
  assert calls == [{"repo_id": "tatsu-lab/alpaca_eval", "filename": "df_gamed.csv", "repo_type": "dataset"}]
  assert ae.win_rates(anns, table, rounds=0)["lc_difficulty_source"] == alpaca_difficulty.HUB_SOURCE


def test_a_local_table_is_read_and_bad_ones_are_named(tmp_path):
  _, table_path = _lc_case(tmp_path, 4)
  table, note = alpaca_difficulty.resolve_difficulty_table(table_path)
  assert note == "" and table.source == table_path and len(table.difficulty) == N
  assert len(table.preference) == 2 * N and not table.not_gamed.any()
  with pytest.raises(FileNotFoundError, match="no_such.csv"):
    alpaca_difficulty.resolve_difficulty_table(str(tmp_path / "no_such.csv"))
  bad = tmp_path / "bad.csv"
  bad.write_text("index,preference\n0,0.5\n")
  with pytest.raises(ValueError, match="lacks the column"):
    read_difficulty_table(str(bad))
  anns = [
    {"question_id": "9999", "model_win_prob": 0.5, "len_model": 10, "len_baseline": 20},
    {"question_id": "0", "model_win_prob": 0.5, "len_model": 30, "len_baseline": 20},
  ]
  with pytest.raises(ValueError, match="no instruction difficulty"):
    ae.win_rates(anns, table, rounds=0)


def test_offline_without_the_table_is_flagged_and_warned_once(tmp_path, monkeypatch, caplog):
  import huggingface_hub

  from helpsteer_jax.eval import rescore

  def offline(**kwargs):
    raise OSError("offline: no cached df_gamed.csv")

  monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
  rng = np.random.default_rng(5)
  rows = []
  for model in ("model_a", "model_b"):
    for a in _annotations(rng, 60, soft=True):
      rows.append(
        {
          "instruction": "i",
          "output_1": "x" * a["len_baseline"],
          "output_2": "y" * a["len_model"],
          "generator_1": "gpt4_1106_preview",
          "generator_2": model,
          "annotator": "j",
          "preference": 1 + a["model_win_prob"],
        }
      )
  path = tmp_path / "annotations.json"
  path.write_text(json.dumps(rows))
  with caplog.at_level(logging.WARNING):
    results = rescore.rescore_alpaca_eval([str(path)], rounds=0)
  warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "NOT comparable" in warnings[0].getMessage()
  assert [r["model"] for r in results] == ["model_a", "model_b"]
  for r in results:
    assert not r["metrics"]["lc_comparable"]
    assert r["headline"]["note"].startswith("not comparable to the AlpacaEval leaderboard")


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
