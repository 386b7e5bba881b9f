"""The benchmark files: questions, baseline answers, reference answers and judge prompts.

Each file is read from the package's bundled data (`helpsteer_jax/data/files/`, or
`HELPSTEER_DATA_DIR` first, through `prompt_sources.locate`) and otherwise downloaded once from
its public source, so an evaluation runs the same offline and on a fresh machine. A file named in
the config instead may be local or a bucket URL. Every loader returns `Question`s with string ids,
so the three benchmarks share the answer and result code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import check_document_encodable, read_jsonl
from helpsteer_jax.data.prompt_sources import (
  ALPACA_EVAL_REFERENCE,
  ARENA_HARD_QUESTIONS,
  ARENA_HARD_URL,
  FASTCHAT_URL,
  MT_BENCH_QUESTIONS,
  locate,
)
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.eval.answer_rows import answer_text_from_row

_ARENA, _FASTCHAT = ARENA_HARD_URL, FASTCHAT_URL
MT_BENCH_REFERENCES = (
  "eval/mt_bench/reference_answer_gpt-4.jsonl",
  f"{_FASTCHAT}/mt_bench/reference_answer/gpt-4.jsonl",
)
MT_BENCH_JUDGE_PROMPTS = ("eval/mt_bench/judge_prompts.jsonl", f"{_FASTCHAT}/judge_prompts.jsonl")
ALPACA_EVAL_BASELINE = ALPACA_EVAL_REFERENCE  # the questions' file is also the baseline's answers


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  turns: tuple[str, ...]  # user messages, one per turn
  category: str = ""


def _file(default: tuple[str, str], override: str) -> str:
  if override:
    if not storage.is_file(override):
      raise FileNotFoundError(f"{override}: benchmark file not found")
    return override
  return os.fspath(locate(*default))


def _limit(items: list[Question], start: int, limit: int) -> list[Question]:
  items = items[start:]
  return items[:limit] if limit else items


def arena_hard_questions(path: str = "", start: int = 0, limit: int = 0) -> list[Question]:
  """The 500 Arena-Hard v0.1 questions (`uid`, `category`, `cluster`, `prompt`)."""
  file = _file(ARENA_HARD_QUESTIONS, path)
  items = []
  for i, row in enumerate(read_jsonl(file)):
    qid = row.get("uid", row.get("question_id"))
    text = row.get("prompt")
    if text is None and isinstance(row.get("turns"), list):  # the older arena-hard layout
      text = row["turns"][0]["content"] if isinstance(row["turns"][0], dict) else row["turns"][0]
    if qid is None or text is None:
      raise ValueError(f"{file}: row {i + 1} lacks a 'uid' and a 'prompt'")
    if not isinstance(text, str):
      raise ValueError(f"{file}: row {i + 1}: field 'prompt' must be a string, got {type(text).__name__}")
    items.append(Question(str(qid), (text,), str(row.get("cluster", row.get("category", "")))))
  return _limit(items, start, limit)


def arena_hard_baseline(name: str = "gpt-4-0314", path: str = "") -> dict[str, str]:
  """question id -> the baseline model's answer (arena-hard's model-answer layout)."""
  default = (f"eval/arena-hard-v0.1/{name}.jsonl", f"{_ARENA}/model_answer/{name}.jsonl")
  file = _file(default, path)
  out = {}
  for i, row in enumerate(read_jsonl(file)):
    qid = row.get("uid", row.get("question_id"))
    turns = answer_text_from_row(row)
    if qid is None or not turns:
      raise ValueError(f"{file}: row {i + 1} has no question id or no answer")
    out[str(qid)] = turns[0]
  return out


def mt_bench_questions(path: str = "", start: int = 0, limit: int = 0) -> list[Question]:
  """The 80 two-turn MT-Bench questions (`question_id`, `category`, `turns`)."""
  file = _file(MT_BENCH_QUESTIONS, path)
  items = []
  for i, row in enumerate(read_jsonl(file)):
    turns = row.get("turns")
    if "question_id" not in row or not isinstance(turns, list) or not turns:
      raise ValueError(f"{file}: row {i + 1} lacks 'question_id' or 'turns'")
    items.append(Question(str(row["question_id"]), tuple(str(t) for t in turns), str(row.get("category", ""))))
  return _limit(items, start, limit)


def mt_bench_references(path: str = "") -> dict[str, list[str]]:
  """question id -> the reference answer turns (graded against for math, reasoning, coding)."""
  file = _file(MT_BENCH_REFERENCES, path)
  return {str(row["question_id"]): answer_text_from_row(row) for row in read_jsonl(file)}


def mt_bench_judge_prompts(path: str = "") -> dict[str, dict[str, Any]]:
  """name (`single-v1`, `single-math-v1`, `single-v1-multi-turn`, ...) -> prompt record."""
  file = _file(MT_BENCH_JUDGE_PROMPTS, path)
  prompts = {}
  for row in read_jsonl(file):
    for key in ("name", "system_prompt", "prompt_template"):
      if not isinstance(row.get(key), str):
        raise ValueError(f"{file}: a judge prompt lacks the string field {key!r}")
    prompts[row["name"]] = row
  return prompts


def alpaca_eval_set(path: str = "", start: int = 0, limit: int = 0) -> tuple[list[Question], dict[str, str], str]:
  """The 805 AlpacaEval instructions, the baseline's outputs by question id, and its name.

  Question ids are the instruction's position in the file ("0" ... "804"); answer files in
  AlpacaEval's own layout (a list of `instruction`/`output`) are matched by instruction text.
  """
  file = _file(ALPACA_EVAL_BASELINE, path)
  text = read_text(file)
  try:
    rows = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}: not valid JSON ({e})") from None
  check_document_encodable(file, text, rows)
  if not isinstance(rows, list):
    raise ValueError(f"{file}: expected a JSON list of {{instruction, output, generator}}")
  questions, baseline, generator = [], {}, ""
  for i, row in enumerate(rows):
    if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
      raise ValueError(f"{file}: entry {i} lacks a string 'instruction' or 'output'")
    qid = str(i)
    questions.append(Question(qid, (row["instruction"],), str(row.get("dataset", ""))))
    baseline[qid] = row["output"]
    generator = generator or str(row.get("generator", ""))
  keep = {q.id for q in _limit(questions, start, limit)}
  return [q for q in questions if q.id in keep], {k: v for k, v in baseline.items() if k in keep}, generator


def instruction_index(questions: list[Question]) -> dict[str, str]:
  """instruction text -> question id (to match AlpacaEval-layout answer files)."""
  return {q.turns[0]: q.id for q in questions}
