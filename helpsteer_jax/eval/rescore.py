"""Scores from judgment files that already exist: nothing is generated and no judge is called.

Each benchmark's reference tool writes its judgments in its own layout; these readers turn them
into this project's records and score them with the same code as a full run:
  * Arena-Hard: arena-hard-auto's judgment files (`model_judgment/<judge>/*.jsonl`, one line per
    question, `question_id` or `uid`, `model`, `games`); for style control also its answer
    files (`model_answer/*.jsonl`), whose `conv_metadata` / `metadata` counts are used as they
    are (answers without them are counted here, see `arena_hard.style_counts`).
  * AlpacaEval: `annotations.json` (a list of `instruction`, `output_1` (baseline), `output_2`,
    `generator_1`, `generator_2`, `preference` in [1, 2], 0 for a draw, null for a failure).
    An instruction's index is its position among that model's annotations in the file, as
    AlpacaEval reads it; the LC win rate uses AlpacaEval's difficulty table.
  * MT-Bench: FastChat's single-answer judgment files (`*_single.jsonl`), categories from the
    MT-Bench questions.
Every function returns one result record per model (`eval/results.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.eval import alpaca_difficulty, alpaca_eval, arena_hard, mt_bench, sources
from helpsteer_jax.eval.answers import answer_text_from_row
from helpsteer_jax.eval.results import make_result

BENCHMARKS = ("arena_hard", "alpaca_eval", "mt_bench")


def expand_paths(paths: Sequence[str], pattern: str) -> list[str]:
  """Files named directly, and those matching `pattern` in named folders; missing ones fail."""
  files = []
  for path in paths:
    if storage.is_dir(path):
      found = storage.glob(path, pattern)
      if not found:
        raise FileNotFoundError(f"{path}: no {pattern} files in this folder")
      files.extend(found)
    elif storage.is_file(path):
      files.append(path)
    else:
      raise FileNotFoundError(f"{path}: no such file or folder")
  return files


def _config(**kwargs: Any) -> dict[str, Any]:
  return {"rescore": dict(kwargs)}


# -- Arena-Hard -----------------------------------------------------------------------------------


def read_arena_hard_judgments(paths: Sequence[str]) -> list[dict[str, Any]]:
  """Judgment records from arena-hard-auto files (a missing game becomes a game without verdict)."""
  records = []
  for file in expand_paths(paths, "*.jsonl"):
    for i, row in enumerate(sources.read_jsonl(file)):
      row = dict(row)
      if "question_id" not in row and "uid" in row:
        row["question_id"] = row["uid"]
      if isinstance(row.get("games"), list):
        row["games"] = [g if isinstance(g, dict) else {"score": None} for g in row["games"]]
      arena_hard.check_judgment(row, f"{file}:{i + 1}")
      row["question_id"] = str(row["question_id"])
      records.append(row)
  return records


def read_arena_hard_answers(paths: Sequence[str]) -> dict[str, dict[str, arena_hard.StyleSource]]:
  """model -> question id -> [4] style counts (from the file's metadata) or the answer text."""
  out: dict[str, dict[str, arena_hard.StyleSource]] = {}
  for file in expand_paths(paths, "*.jsonl"):
    for i, row in enumerate(sources.read_jsonl(file)):
      where = f"{file}:{i + 1}"
      model = row.get("model_id", row.get("model"))
      qid = row.get("question_id", row.get("uid"))
      if model is None or qid is None:
        raise ValueError(f"{where}: an answer needs 'model' (or 'model_id') and 'question_id' (or 'uid')")
      meta = row.get("conv_metadata", row.get("metadata"))
      if isinstance(meta, Mapping) and "token_len" in meta:
        source: arena_hard.StyleSource = arena_hard.style_counts_from_metadata(meta, where)
      else:
        turns = answer_text_from_row(row)
        if not turns:
          raise ValueError(f"{where}: no answer text and no style metadata")
        source = turns[0]
      out.setdefault(str(model), {})[str(qid)] = source
  return out


def rescore_arena_hard(
  judgments: Sequence[str],
  answers: Sequence[str] = (),
  baseline: str = arena_hard.BASELINE,
  style_control: bool = False,
  rounds: int = 100,
  seed: int = 42,
) -> list[dict[str, Any]]:
  records = read_arena_hard_judgments(judgments)
  if not records:
    raise ValueError(f"{list(judgments)}: no judgments")
  style_answers = None
  if style_control:
    if not answers:
      raise ValueError("style control needs the answer files (--answers) of the models and the baseline")
    style_answers = read_arena_hard_answers(answers)
    if baseline not in style_answers:
      style_answers[baseline] = dict(sources.arena_hard_baseline(baseline))
  scores = arena_hard.score_judgments(records, baseline, rounds, seed, style_control, style_answers)
  judges = {str(r.get("judge", "")) for r in records}
  results = []
  for model, metrics in sorted(scores.items()):
    counts = {
      "questions": metrics["num_questions"],
      "judged": metrics["num_questions"],
      "failed": metrics["failed_games"],
    }
    results.append(
      make_result(
        "arena_hard",
        model,
        metrics["score"],
        (metrics["ci_low"], metrics["ci_high"]),
        metrics,
        counts,
        judge=",".join(sorted(judges)),
        baseline=baseline,
        config=_config(
          judgments=list(judgments), answers=list(answers), style_control=style_control, rounds=rounds, seed=seed
        ),
      )
    )
  return results


# -- AlpacaEval -----------------------------------------------------------------------------------


def _preference(value: Any, where: str) -> Optional[float]:
  """AlpacaEval's preference (1 = baseline, 2 = model, 0 = draw, null = failed) -> P(model wins)."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return None
  if not isinstance(value, (int, float)) or not (value == 0 or 1 <= value <= 2):
    raise ValueError(f"{where}: preference {value!r} is not in [1, 2], 0 (draw) or null")
  return 0.5 if value == 0 else float(value) - 1.0


def read_alpaca_annotations(path: str) -> dict[str, list[dict[str, Any]]]:
  """model (generator_2) -> annotation records, in file order."""
  if not storage.is_file(path):
    raise FileNotFoundError(f"{path}: no such annotations file")
  try:
    rows = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(rows, list):
    raise ValueError(f"{path}: expected a JSON list of annotations")
  out: dict[str, list[dict[str, Any]]] = {}
  for i, row in enumerate(rows):
    where = f"{path}: annotation {i}"
    for key in ("output_1", "output_2", "generator_2", "preference"):
      if key not in row:
        raise ValueError(f"{where} lacks {key!r}")
    mine = out.setdefault(str(row["generator_2"]), [])
    mine.append(
      {
        "question_id": str(len(mine)),
        "instruction": row.get("instruction", ""),
        "model": str(row["generator_2"]),
        "baseline": str(row.get("generator_1", "")),
        "judge": str(row.get("annotator", "")),
        "model_win_prob": _preference(row["preference"], where),
        "len_model": len(str(row["output_2"])),
        "len_baseline": len(str(row["output_1"])),
      }
    )
  return out


def rescore_alpaca_eval(
  annotations: Sequence[str], difficulty_file: str = "", rounds: int = 100, seed: int = 42
) -> list[dict[str, Any]]:
  by_model: dict[str, list[dict[str, Any]]] = {}
  for path in expand_paths(annotations, "annotations.json"):
    for model, records in read_alpaca_annotations(path).items():
      if model in by_model:
        raise ValueError(f"{path}: annotations of {model!r} appear in more than one file")
      by_model[model] = records
  if not by_model:
    raise ValueError(f"{list(annotations)}: no annotations")
  table, note = alpaca_difficulty.resolve_difficulty_table(difficulty_file)
  results = []
  for model, records in sorted(by_model.items()):
    metrics = alpaca_eval.win_rates(records, table, rounds, seed, note)
    counts = {"questions": len(records), "judged": len(records), "failed": metrics["failed"]}
    results.append(
      make_result(
        "alpaca_eval",
        model,
        metrics["lc_win_rate"],
        (metrics["lc_ci_low"], metrics["lc_ci_high"]),
        metrics,
        counts,
        judge=records[0]["judge"],
        baseline=records[0]["baseline"],
        config=_config(annotations=list(annotations), difficulty_file=difficulty_file, rounds=rounds, seed=seed),
        note=metrics.get("lc_note", ""),
      )
    )
  return results


# -- MT-Bench -------------------------------------------------------------------------------------


def rescore_mt_bench(
  judgments: Sequence[str], questions: str = "", rounds: int = 100, seed: int = 42
) -> list[dict[str, Any]]:
  by_model: dict[str, list[dict[str, Any]]] = {}
  for file in expand_paths(judgments, "*_single.jsonl"):
    for i, row in enumerate(sources.read_jsonl(file)):
      for key in ("question_id", "model", "score"):
        if key not in row:
          raise ValueError(f"{file}:{i + 1}: judgment lacks {key!r}")
      by_model.setdefault(str(row["model"]), []).append(row)
  if not by_model:
    raise ValueError(f"{list(judgments)}: no judgments")
  categories = {q.id: q.category for q in sources.mt_bench_questions(questions)}
  results = []
  for model, records in sorted(by_model.items()):
    table = mt_bench.category_table(records, categories)
    overall = table[-1]
    if overall["average"] is None:
      raise ValueError(f"{model}: no MT-Bench judgment holds a readable rating")
    ci = mt_bench.bootstrap_mean_by_question(records, rounds, seed)
    metrics = {
      "average": overall["average"],
      "turn_1": overall["turn_1"],
      "turn_2": overall["turn_2"],
      "ci_low": ci[0],
      "ci_high": ci[1],
      "categories": table,
      "raw_scale": False,
    }
    judge = records[0].get("judge")
    judge = judge[0] if isinstance(judge, list) and judge else str(judge or "")
    counts = {
      "questions": len({str(r["question_id"]) for r in records}),
      "judged": len(records),
      "failed": overall["failed"],
    }
    results.append(
      make_result(
        "mt_bench",
        model,
        overall["average"],
        ci,
        metrics,
        counts,
        judge=judge,
        config=_config(judgments=list(judgments), questions=questions, rounds=rounds, seed=seed),
      )
    )
  return results
