"""Rescoring files written by the benchmarks' reference tools: arena-hard-auto judgments and
answers, AlpacaEval annotations.json, FastChat single-answer judgments; and the entry point's
argument errors, raised before any file is read."""

import json
import os
import sys

import numpy as np
import pytest

from helpsteer_jax import rescore as entry
from helpsteer_jax.eval import arena_hard as ah
from helpsteer_jax.eval import rescore
from helpsteer_jax.eval.results import read_result
from helpsteer_jax.testing.subprocesses import run_entry


def _write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def _arena_files(tmp_path, rng):
  """arena-hard-auto's layout: model_judgment/<judge>/<model>.jsonl and model_answer/<model>.jsonl."""
  judge_dir, answer_dir = tmp_path / "model_judgment" / "gpt-4-1106-preview", tmp_path / "model_answer"
  wins = ("B>A", "A>B")
  loses = ("A>B", "B>A")
  answers = {}
  for model, p in (("good", 0.7), ("weak", 0.35)):
    rows, ans = [], []
    for q in range(60):
      g = [wins[k] if rng.random() < p else loses[k] for k in range(2)]
      rows.append(
        {
          "question_id": f"q{q}",
          "model": model,
          "judge": "gpt-4-1106-preview",
          "games": [
            {"user_prompt": "", "judgment": "", "score": g[0]},
            {"user_prompt": "", "judgment": "", "score": g[1]},
          ],
          "tstamp": 1.0,
        }
      )
      meta = {
        "token_len": int(rng.integers(100, 900)),
        "header_count": {"h1": int(rng.integers(0, 3))},
        "list_count": {"ordered": int(rng.integers(0, 5)), "unordered": 0},
        "bold_count": {"**": int(rng.integers(0, 4)), "__": 0},
      }
      ans.append(
        {"question_id": f"q{q}", "model_id": model, "choices": [{"turns": [{"content": "x"}]}], "conv_metadata": meta}
      )
      answers.setdefault(model, {})[f"q{q}"] = ah.style_counts_from_metadata(meta, "test")
    _write_jsonl(str(judge_dir / f"{model}.jsonl"), rows)
    _write_jsonl(str(answer_dir / f"{model}.jsonl"), ans)
  base = [
    {
      "question_id": f"q{q}",
      "model_id": ah.BASELINE,
      "choices": [{"turns": [{"content": "b"}]}],
      "conv_metadata": {"token_len": 400, "header_count": 1, "list_count": 2, "bold_count": 1},
    }
    for q in range(60)
  ]
  _write_jsonl(str(answer_dir / f"{ah.BASELINE}.jsonl"), base)
  return str(judge_dir), str(answer_dir)


def test_arena_hard_judgment_folder_is_rescored_with_and_without_style(tmp_path):
  judge_dir, answer_dir = _arena_files(tmp_path, np.random.default_rng(0))
  out = tmp_path / "scores"
  plain = entry.rescore("arena_hard", [judge_dir], rounds=5, output_dir=str(out))
  assert [r["model"] for r in plain] == ["good", "weak"]
  records = rescore.read_arena_hard_judgments([judge_dir])
  direct = ah.score_judgments(records, rounds=5)
  assert plain[0]["headline"]["value"] == pytest.approx(direct["good"]["score"])
  assert read_result(str(out / "good" / "eval_result.json"))["headline"]["value"] == plain[0]["headline"]["value"]
  styled = entry.rescore("arena_hard", [judge_dir], [answer_dir], style_control=True, rounds=0)
  assert styled[0]["metrics"]["style_length_unit"] == "tokens (answer metadata)"
  assert set(styled[0]["metrics"]["style_coef"]) == set(ah.STYLE_FEATURES)


def test_alpaca_eval_annotations_are_rescored(tmp_path):
  rng = np.random.default_rng(1)
  rows = [
    {
      "instruction": f"i{k}",
      "output_1": "x" * int(rng.integers(100, 2000)),
      "output_2": "y" * int(rng.integers(100, 3000)),
      "generator_1": "gpt4_1106_preview",
      "generator_2": "mine",
      "annotator": "weighted_alpaca_eval_gpt4_turbo",
      "preference": [1.0, 2.0, 0, None, float(rng.uniform(1, 2))][k % 5],
    }
    for k in range(50)
  ]
  path = tmp_path / "annotations.json"
  path.write_text(json.dumps(rows))
  by_model = rescore.read_alpaca_annotations(str(path))
  anns = by_model["mine"]
  assert [a["question_id"] for a in anns[:3]] == ["0", "1", "2"]  # AlpacaEval's index: the position
  assert [a["model_win_prob"] for a in anns[:4]] == [0.0, 1.0, 0.5, None]  # 0 = draw, null = failed
  assert anns[0]["len_model"] == len(rows[0]["output_2"]) and anns[0]["len_baseline"] == len(rows[0]["output_1"])
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps([dict(rows[0], preference=3)]))
  with pytest.raises(ValueError, match="annotation 0"):
    rescore.read_alpaca_annotations(str(bad))


def test_fastchat_single_judgments_are_rescored(tmp_path, bundled_data):
  from helpsteer_jax.eval import sources

  questions = sources.mt_bench_questions()
  rows = []
  for k, q in enumerate(questions):
    for turn in (1, 2):
      score = -1 if k == 0 and turn == 2 else (k + turn) % 10 + 1
      rows.append(
        {
          "question_id": int(q.id),
          "model": "vicuna",
          "judge": ["gpt-4", "single-v1"],
          "user_prompt": "",
          "judgment": f"[[{score}]]",
          "score": score,
          "turn": turn,
          "tstamp": 0,
        }
      )
  path = tmp_path / "gpt-4_single.jsonl"
  _write_jsonl(str(path), rows)
  (result,) = entry.rescore("mt_bench", [str(tmp_path)], rounds=10)
  valid = [r["score"] for r in rows if r["score"] != -1]
  assert result["headline"]["value"] == pytest.approx(sum(valid) / len(valid), abs=1e-12)
  assert result["counts"]["failed"] == 1 and result["judge"] == "gpt-4"
  assert result["headline"]["ci_low"] <= result["headline"]["value"] <= result["headline"]["ci_high"]


def test_argument_errors_come_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="expected one of"):
    entry.rescore("arena", [str(tmp_path)])
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    entry.rescore("mt_bench", [str(tmp_path / "missing.jsonl")])
  with pytest.raises(ValueError, match="needs --answers"):
    entry.rescore("arena_hard", [str(tmp_path)], style_control=True)
  with pytest.raises(ValueError, match="arena_hard only"):
    entry.rescore("mt_bench", [str(tmp_path)], [str(tmp_path)], style_control=True)


@pytest.mark.entry
def test_entry_point_prints_one_line_per_model(tmp_path):
  judge_dir, _ = _arena_files(tmp_path, np.random.default_rng(2))
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root)
  out = run_entry(
    [
      sys.executable,
      "-m",
      "helpsteer_jax.rescore",
      "--benchmark=arena_hard",
      f"--judgments={judge_dir}",
      "--bootstrap_rounds=3",
    ],
    cwd=root,
    env=env,
    timeout=120,
  )
  assert "arena_hard good: score = " in out and "arena_hard weak: score = " in out
