"""Tables and scaling plots regenerated from synthetic result files (the result-file format is
the contract between `evaluate` and `tables`)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax.eval.plots import budget_lines
from helpsteer_jax.eval.results import FORMAT, make_result, read_result, write_result
from helpsteer_jax.tables import make_tables

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = b"\x89PNG\r\n\x1a\n"


def _write(root, name, benchmark, label, value, ci=(None, None), scaling=None):
  result = make_result(
    benchmark,
    f"model-{label}",
    value,
    ci,
    {"extra": 1},
    {"questions": 10, "judged": 10, "failed": 0},
    label=label,
    judge="judge",
    baseline="base",
    scaling=scaling,
  )
  return write_result(os.path.join(root, name), result)


POLICY = "checkpoints/Llama-3.1-Nemotron-70B-Instruct-HF"


def _tree(label, mode="feedback_edit", multiple=2.0, drafts=1, feedbacks=3, edits=1, policy=POLICY):
  return {
    "token_multiple": multiple,
    "mode": mode,
    "drafts": drafts,
    "feedbacks": feedbacks,
    "edits": edits,
    "label": label,
    "roles": {"policy": policy, "edit_model": f"checkpoints/{label.split(':')[1]}"},
  }


@pytest.fixture()
def results_dir(tmp_path):
  root = str(tmp_path / "results")
  greedy = {
    "token_multiple": 1.0,
    "mode": "greedy",
    "drafts": None,
    "feedbacks": None,
    "edits": None,
    "roles": {"policy": POLICY},
  }
  _write(root, "arena_hard/base", "arena_hard", "nemotron_instruct:greedy", 40.0, (38.0, 43.0), greedy)
  _write(root, "mt_bench/base", "mt_bench", "nemotron_instruct:greedy", 8.1, (7.9, 8.3), greedy)
  _write(root, "alpaca/base", "alpaca_eval", "nemotron_instruct:greedy", 35.5, (33.0, 38.0), greedy)
  rows = {
    "feedback_edit": 60.0,
    "self_feedback_self_edit": 45.0,
    "feedback_self_edit": 52.0,
    "edit_without_rl": 55.0,
    "edit_without_feedback": 48.0,
  }
  for variant, score in rows.items():
    label = f"nemotron_instruct:{variant}"
    _write(root, f"arena_hard/{variant}", "arena_hard", label, score, (score - 2, score + 3), _tree(label))
  _write(
    root,
    "arena_hard/best_of_n",
    "arena_hard",
    "nemotron_instruct:best_of_n",
    50.0,
    (48.0, 52.0),
    dict(_tree("nemotron_instruct:best_of_n", "best_of_n", drafts=2), feedbacks=None, edits=None),
  )
  llama = "checkpoints/Llama-3.3-70B-Instruct"
  _write(
    root,
    "arena_hard/llama_base",
    "arena_hard",
    "llama3.3_instruct:greedy",
    35.0,
    (33.0, 37.0),
    dict(greedy, roles={"policy": llama}),
  )
  _write(
    root,
    "arena_hard/llama_fe",
    "arena_hard",
    "llama3.3_instruct:feedback_edit",
    41.0,
    (39.0, 43.0),
    _tree("llama3.3_instruct:feedback_edit", policy=llama),
  )
  _write(root, "arena_hard/gpt4o", "arena_hard", "gpt-4o", 49.0, (47.0, 51.0))
  _write(root, "arena_hard/unlisted", "arena_hard", "nemotron_instruct:my_new_variant", 51.0)
  # A scaling grid: drafts x feedbacks (edits fixed), token multiple growing with both.
  for d in (1, 2, 4):
    for f in (1, 4):
      label = f"nemotron_instruct:grid:d{d}_f{f}_e1"
      _write(
        root,
        f"grid/d{d}_f{f}",
        "arena_hard",
        label,
        40 + 3 * d + f,
        (38 + 3 * d + f, 42 + 3 * d + f),
        dict(
          _tree(label, multiple=2.0 * d, drafts=d, feedbacks=f),
          roles={"policy": POLICY, "edit_model": "checkpoints/feedback_edit"},
        ),
      )
  # The d4_f4_e1 tree under token budgets of 3x and 6x: points of a line of their own.
  for budget, multiple in ((6, 5.5), (3, 3.2)):
    label = f"nemotron_instruct:budget:d4_f4_e1_b{budget}"
    _write(
      root,
      f"budget/b{budget}",
      "arena_hard",
      label,
      50 + budget,
      (48 + budget, 52 + budget),
      dict(
        _tree(label, multiple=multiple, drafts=4, feedbacks=4),
        roles={"policy": POLICY, "edit_model": "checkpoints/feedback_edit"},
        token_budget=float(budget),
        settle_margin=0.0,
      ),
    )
  return root


def test_result_file_round_trip_and_validation(tmp_path):
  path = _write(str(tmp_path), "r", "arena_hard", "base", 55.0, (50.0, 60.0))
  result = read_result(path)
  assert result["format"] == FORMAT and result["headline"] == {
    "name": "score",
    "value": 55.0,
    "ci_low": 50.0,
    "ci_high": 60.0,
  }
  bad = dict(result, format="something/0")
  with open(path, "w") as f:
    json.dump(bad, f)
  with pytest.raises(ValueError, match="format"):
    read_result(path)
  with pytest.raises(ValueError, match="benchmark"):
    make_result("mmlu", "m", 1.0, (None, None), {}, {})


def test_tables_markdown_csv_and_plots(results_dir, tmp_path):
  out = str(tmp_path / "tables")
  report = make_tables([results_dir], out)
  md = open(os.path.join(out, "tables.md")).read()
  assert "### Main results" in md and "### Ablations" in md
  with open(os.path.join(out, "main.csv")) as f:
    main = list(csv.DictReader(f))
  # Two policies, each with its + Feedback + Edit row, then the external model, then what no
  # table lists; no grid point is a row.
  assert [r["label"] for r in main] == [
    "llama3.3_instruct:greedy",
    "llama3.3_instruct:feedback_edit",
    "nemotron_instruct:greedy",
    "nemotron_instruct:feedback_edit",
    "gpt-4o",
    "nemotron_instruct:my_new_variant",
  ]
  assert [r["name"] for r in main][:5] == [
    "Llama-3.3-70B-Instruct",
    "Llama-3.3-70B-Instruct + Feedback + Edit",
    "Llama-3.1-Nemotron-70B-Instruct",
    "Llama-3.1-Nemotron-70B-Instruct + Feedback + Edit",
    "GPT-4o",
  ]
  assert (
    "| Llama-3.1-Nemotron-70B-Instruct | 40.0 (-2.0, +3.0) | 8.10 (-0.20, +0.20) | 35.5 (-2.5, +2.5) | 1.0x |" in md
  )
  assert "| Without RL (Edit model after SFT) | 55.0 (-2.0, +3.0) |  |  | 2.0x |" in md
  with open(os.path.join(out, "ablation.csv")) as f:
    rows = list(csv.DictReader(f))
  # The ablation policy's base row first, then the full system and every variant.
  assert [r["label"].split(":")[1] for r in rows] == [
    "greedy",
    "feedback_edit",
    "best_of_n",
    "self_feedback_self_edit",
    "feedback_self_edit",
    "edit_without_rl",
    "edit_without_feedback",
  ]
  assert rows[0]["name"] == "Llama-3.1-Nemotron-70B-Instruct (base)"
  assert float(rows[1]["arena_hard"]) == 60.0 and float(rows[1]["arena_hard_ci_low"]) == 58.0
  assert rows[1]["mt_bench"] == "" and float(rows[1]["token_multiple"]) == 2.0
  assert float(rows[0]["alpaca_eval"]) == 35.5 and float(rows[0]["mt_bench_ci_high"]) == 8.3
  for axis in ("drafts", "feedbacks", "edits"):
    with open(os.path.join(out, f"scaling_arena_hard_{axis}.png"), "rb") as f:
      assert f.read(8) == PNG
  with open(os.path.join(out, "scaling.csv")) as f:
    points = list(csv.DictReader(f))
  assert len(points) == len(report["scaling_points"])
  # The greedy answers are points at 1x of their policy, Best-of-N a reference of its own; grid
  # points (and the ablation runs, each its own series) have all three axes.
  greedy = [p for p in points if p["kind"] == "greedy" and p["benchmark"] == "arena_hard"]
  assert sorted(p["series"] for p in greedy) == [
    "policy=Llama-3.1-Nemotron-70B-Instruct-HF",
    "policy=Llama-3.3-70B-Instruct",
  ]
  assert all(float(p["token_multiple"]) == 1.0 and p["drafts"] == "" for p in greedy)
  assert [p["drafts"] for p in points if p["kind"] == "best_of_n"] == ["2"]
  series = "feedback_edit edit_model=feedback_edit policy=Llama-3.1-Nemotron-70B-Instruct-HF"
  grid = [p for p in points if p["kind"] == "grid" and p["series"] == series]
  assert len(grid) == 7 and all(p["drafts"] and p["feedbacks"] and p["edits"] for p in grid)
  # Budgeted searches: points of the grid's series, not table rows, drawn as one line by multiple.
  budgets = [p for p in report["scaling_points"] if p["kind"] == "budget"]
  assert sorted((p["token_budget"], p["token_multiple"]) for p in budgets) == [(3.0, 3.2), (6.0, 5.5)]
  assert all(p["series"] == series for p in budgets)
  assert not any(":budget:" in r["label"] for r in main)
  [(label, members)] = budget_lines(budgets, several_series=False)
  assert label == "budget: drafts=4 x feedbacks=4 x edits=1"
  assert [p["token_multiple"] for p in members] == [3.2, 5.5]


def test_rows_file_renames_and_assigns_folders(results_dir, tmp_path):
  rows = tmp_path / "rows.json"
  rows.write_text(
    json.dumps(
      {
        "main": [{"label": "llama", "name": "My base", "dirs": [os.path.join(results_dir, "arena_hard", "base")]}],
        "ablation": [{"label": "nemotron_instruct:feedback_edit", "name": "Full system"}],
      }
    )
  )
  out = str(tmp_path / "t")
  make_tables([results_dir], out, rows=str(rows), plots=False)
  md = open(os.path.join(out, "tables.md")).read()
  assert "| My base | 40.0 (-2.0, +3.0) |" in md and "| Full system | 60.0" in md
  assert not os.path.exists(os.path.join(out, "scaling_arena_hard_drafts.png"))


@pytest.mark.entry
def test_tables_command_line(results_dir, tmp_path):
  out = tmp_path / "cli"
  proc = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.tables", f"--results={results_dir}", f"--out={out}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "### Ablations" in proc.stdout and (out / "main.csv").is_file()
  missing = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.tables", f"--results={tmp_path / 'none'}", f"--out={out}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert missing.returncode != 0 and "no such results folder" in missing.stderr
