"""The evaluation result file: what `evaluate` writes and what the tables and plots read.

An evaluation output folder holds
    answers.jsonl     the model's answers (see `eval/answers.py`), appended as they are made
    judgments.jsonl   the benchmark's judgment records, appended as they are made
    eval_result.json  the summary below, rewritten at the end of each run
and, for MT-Bench, `mt_bench_table.md` (the per-category table).

`eval_result.json` (format "helpsteer_jax.eval_result/1"):
    {
      "format": "helpsteer_jax.eval_result/1",
      "benchmark": "arena_hard" | "mt_bench" | "alpaca_eval",
      "model": str,                 # the evaluated model's name
      "label": str,                 # the table row it belongs to ("" = use the model name)
      "judge": str, "baseline": str,
      "headline": {"name": str, "value": float, "ci_low": float | null, "ci_high": float | null,
                   "note": str},  # note only when the number is not comparable to the reference

      "metrics": {...},             # everything the benchmark's scorer returned
      "counts": {"questions": int, "judged": int, "failed": int},
      "scaling": null | {"token_multiple": float, "mode": str, "drafts": int, "feedbacks": int,
                         "edits": int, ...},   # when the answers came from a scaling search
      "created": str,               # ISO time
      "config": {...}               # the evaluation config
    }
The headline is the number a paper table shows: the Arena-Hard score (win rate vs. the baseline,
%) with its 95% interval, the MT-Bench average rating (interval from a bootstrap over questions),
the AlpacaEval length-controlled win rate (%) with its interval.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.text_files import read_text

FORMAT = "helpsteer_jax.eval_result/1"
RESULT_FILE = "eval_result.json"
ANSWERS_FILE = "answers.jsonl"
JUDGMENTS_FILE = "judgments.jsonl"
BENCHMARKS = ("arena_hard", "mt_bench", "alpaca_eval")
HEADLINES = {"arena_hard": "score", "mt_bench": "average", "alpaca_eval": "lc_win_rate"}


def make_result(
  benchmark: str,
  model: str,
  headline_value: float,
  ci: tuple[Optional[float], Optional[float]],
  metrics: Mapping[str, Any],
  counts: Mapping[str, int],
  label: str = "",
  judge: str = "",
  baseline: str = "",
  scaling: Optional[Mapping[str, Any]] = None,
  config: Optional[Mapping[str, Any]] = None,
  note: str = "",
) -> dict[str, Any]:
  if benchmark not in BENCHMARKS:
    raise ValueError(f"benchmark {benchmark!r}; expected one of {BENCHMARKS}")
  result: dict[str, Any] = {
    "format": FORMAT,
    "benchmark": benchmark,
    "model": model,
    "label": label,
    "judge": judge,
    "baseline": baseline,
    "headline": {
      "name": HEADLINES[benchmark],
      "value": float(headline_value),
      "ci_low": None if ci[0] is None else float(ci[0]),
      "ci_high": None if ci[1] is None else float(ci[1]),
    },
    "metrics": dict(metrics),
    "counts": dict(counts),
    "scaling": None if scaling is None else dict(scaling),
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "config": dict(config or {}),
  }
  if note:
    result["headline"]["note"] = note
  return result


def write_result(out_dir: str, result: Mapping[str, Any]) -> str:
  """Writes `eval_result.json` atomically (a crash never leaves half a file)."""
  check_result(result, out_dir)
  storage.makedirs(out_dir)
  path = storage.join(out_dir, RESULT_FILE)
  storage.write_atomic(path, json.dumps(result, indent=2, ensure_ascii=False))
  return path


def check_result(result: Mapping[str, Any], where: str) -> None:
  if result.get("format") != FORMAT:
    raise ValueError(f"{where}: format {result.get('format')!r}; expected {FORMAT!r}")
  if result.get("benchmark") not in BENCHMARKS:
    raise ValueError(f"{where}: benchmark {result.get('benchmark')!r}; expected one of {BENCHMARKS}")
  headline = result.get("headline")
  if not isinstance(headline, Mapping) or not isinstance(headline.get("value"), (int, float)):
    raise ValueError(f"{where}: 'headline' must hold a numeric 'value'")
  for key in ("model", "label"):
    if not isinstance(result.get(key), str):
      raise ValueError(f"{where}: {key!r} must be a string")


def read_result(path: str) -> dict[str, Any]:
  try:
    result = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  check_result(result, path)
  result["path"] = os.path.dirname(storage.absolute(path))
  return result


def find_results(roots: Iterable[str]) -> list[dict[str, Any]]:
  """Every `eval_result.json` under the given folders (searched recursively), sorted by path."""
  found = []
  for root in roots:
    if storage.is_file(root):
      found.append(read_result(root))
      continue
    if not storage.is_dir(root):
      raise FileNotFoundError(f"{root}: no such results folder")
    for path in storage.walk_files(root):
      if os.path.basename(path) == RESULT_FILE:
        found.append(read_result(path))
  return sorted(found, key=lambda r: r["path"])


def row_key(result: Mapping[str, Any]) -> str:
  return result.get("label") or result["model"]
