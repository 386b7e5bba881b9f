"""Tables and scaling plots regenerated from synthetic result files (the result-file format is
the contract between `evaluate` and `tables`)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax.eval.results import FORMAT, make_result, read_result, write_result
from helpsteer_jax.tables import make_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


def _write(root, name, benchmark, label, value, ci=(None, None), scaling=None):
  result = make_result(benchmark, f"model-{label}", value, ci, {"extra": 1},
                       {"questions": 10, "judged": 10, "failed": 0}, label=label, judge="judge",
                       baseline="base", scaling=scaling)
  return write_result(os.path.join(root, name), result)


@pytest.fixture()
def results_dir(tmp_path):
  root = str(tmp_path / "results")
  rows = {"base": 40.0, "feedback_edit": 60.0, "self_feedback_self_edit": 45.0, "feedback_self_edit": 52.0,
          "edit_without_rl": 55.0, "edit_without_feedback": 48.0}
  for label, score in rows.items():
    scaling = None if label == "base" else {"token_multiple": 16.0, "mode": "feedback_edit", "drafts": 8,
                                            "feedbacks": 16, "edits": 1,
                                            "roles": {"edit_model": f"checkpoints/{label}"}}
    _write(root, f"arena_hard/{label}", "arena_hard", label, score, (score - 2, score + 3), scaling)
  _write(root, "mt_bench/base", "mt_bench", "base", 8.1, (7.9, 8.3))
  _write(root, "alpaca/base", "alpaca_eval", "base", 35.5, (33.0, 38.0))
  _write(root, "arena_hard/unlisted", "arena_hard", "my_new_variant", 51.0)
  # A scaling grid: drafts x feedbacks (edits fixed), token multiple growing with both.
  for d in (1, 2, 4):
    for f in (1, 4):
      _write(root, f"grid/d{d}_f{f}", "arena_hard", f"grid_d{d}_f{f}", 40 + 3 * d + f,
             (38 + 3 * d + f, 42 + 3 * d + f),
             {"token_multiple": d * (1 + 2 * f) / 1.0, "mode": "feedback_edit", "drafts": d, "feedbacks": f,
              "edits": 1, "roles": {"edit_model": "checkpoints/feedback_edit"}})
  return root


def test_result_file_round_trip_and_validation(tmp_path):
  path = _write(str(tmp_path), "r", "arena_hard", "base", 55.0, (50.0, 60.0))
  result = read_result(path)
  assert result["format"] == FORMAT and result["headline"] == {"name": "score", "value": 55.0,
                                                               "ci_low": 50.0, "ci_high": 60.0}
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
  assert "| Base policy (greedy) | 40.0 (-2.0, +3.0) | 8.10 (-0.20, +0.20) | 35.5 (-2.5, +2.5) |  |" in md
  assert "| Without RL (Edit model after SFT) | 55.0 (-2.0, +3.0) |  |  | 16.0x |" in md
  assert "my_new_variant" in md  # a label in no table is appended to the main table
  with open(os.path.join(out, "ablation.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["label"] for r in rows] == ["feedback_edit", "self_feedback_self_edit", "feedback_self_edit",
                                        "edit_without_rl", "edit_without_feedback"]
  assert float(rows[0]["arena_hard"]) == 60.0 and float(rows[0]["arena_hard_ci_low"]) == 58.0
  assert rows[0]["mt_bench"] == "" and float(rows[0]["token_multiple"]) == 16.0
  with open(os.path.join(out, "main.csv")) as f:
    main = {r["label"]: r for r in csv.DictReader(f)}
  assert float(main["base"]["alpaca_eval"]) == 35.5 and float(main["base"]["mt_bench_ci_high"]) == 8.3
  for axis in ("drafts", "feedbacks", "edits"):
    with open(os.path.join(out, f"scaling_arena_hard_{axis}.png"), "rb") as f:
      assert f.read(8) == PNG
  with open(os.path.join(out, "scaling.csv")) as f:
    points = list(csv.DictReader(f))
  # 6 grid points plus the 5 ablation runs (all at 8 x 16 x 1), each ablation its own series.
  assert len(points) == 11 and len(report["scaling_points"]) == 11
  assert len({p["series"] for p in points}) == 5
  grid = [p for p in points if p["series"] == "feedback_edit edit_model=feedback_edit"]
  assert len(grid) == 7  # the grid and the full system's own run


def test_rows_file_renames_and_assigns_folders(results_dir, tmp_path):
  rows = tmp_path / "rows.json"
  rows.write_text(json.dumps({
      "main": [{"label": "llama", "name": "Llama-3.3-70B-Instruct",
                "dirs": [os.path.join(results_dir, "arena_hard", "base")]}],
      "ablation": [{"label": "feedback_edit", "name": "Full system"}]}))
  out = str(tmp_path / "t")
  make_tables([results_dir], out, rows=str(rows), plots=False)
  md = open(os.path.join(out, "tables.md")).read()
  assert "| Llama-3.3-70B-Instruct | 40.0 (-2.0, +3.0) |" in md and "| Full system | 60.0" in md
  assert not os.path.exists(os.path.join(out, "scaling_arena_hard_drafts.png"))


def test_tables_command_line(results_dir, tmp_path):
  out = tmp_path / "cli"
  proc = subprocess.run([sys.executable, "-m", "helpsteer_jax.tables", f"--results={results_dir}", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "### Ablations" in proc.stdout and (out / "main.csv").is_file()
  missing = subprocess.run([sys.executable, "-m", "helpsteer_jax.tables", f"--results={tmp_path / 'none'}",
                            f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert missing.returncode != 0 and "no such results folder" in missing.stderr
