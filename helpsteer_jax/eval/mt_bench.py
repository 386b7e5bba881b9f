"""MT-Bench: two-turn answers, single-answer grading 1-10, and the per-category table.

Answers. Turn 1 is answered, then turn 2 is asked after the model's own turn-1 answer. Each
category has its own temperature (`CATEGORY_TEMPERATURE`), as in FastChat's answer generation:
creative categories sample, the ones with a right answer are greedy.

Grading. The judge prompts come from the bundled `judge_prompts.jsonl` (FastChat's set):
`single-v1` for turn 1, `single-v1-multi-turn` for turn 2 (the judge sees the whole conversation
and grades the second answer), and their `single-math-v1` variants with the reference answer for
math, reasoning and coding. Judgments are stored in FastChat's single-answer layout, one JSON line
per (question, turn): `{"question_id", "model", "judge": [judge, prompt name], "user_prompt",
"judgment", "score", "turn"}` with `score` -1 when no rating could be read, so FastChat's files
can be read and tabulated here.

The score is the mean rating over all graded (question, turn) pairs; failed gradings are left out
of every mean and reported as a count.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from helpsteer_jax.eval.judges.base import ChatRequest

CATEGORY_TEMPERATURE = {
  "writing": 0.7,
  "roleplay": 0.7,
  "extraction": 0.0,
  "math": 0.0,
  "coding": 0.0,
  "reasoning": 0.0,
  "stem": 0.1,
  "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7  # a category outside the eight above
REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
FAILED = -1

_NUMBER = r"(\d+\.?\d*)\s*(?:/\s*10)?"
_PATTERNS = (
  re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]"),  # the requested form, [[7]]
  re.compile(r"\[\s*" + _NUMBER + r"\s*\]"),  # a single bracket, [7]
  re.compile(r"rating\s*(?:is|of|:)?\s*\**\s*" + _NUMBER, re.I),  # "Rating: 7" without brackets
)


def temperature_for(category: str) -> float:
  return CATEGORY_TEMPERATURE.get(category, DEFAULT_TEMPERATURE)


def parse_rating(judgment: str) -> Optional[float]:
  """The 1-10 rating of a judgment, or None if it has none (a failed grading).

  Forms are tried in order of how closely they follow the requested format: `[[x]]`, then `[x]`,
  then `Rating: x`; `x` may carry decimals or a `/10`. When a form occurs several times the FIRST
  occurrence is taken, as FastChat's grader does (`re.search`), so a judgment file graded here
  and there gets the same scores. A value outside 1-10 is a failed grading.
  """
  for pattern in _PATTERNS:
    found = pattern.search(judgment or "")
    if found:
      value = float(found.group(1))
      return value if 1.0 <= value <= 10.0 else None
  return None


def judge_prompt_name(category: str, turn: int) -> str:
  name = "single-math-v1" if category in REFERENCE_CATEGORIES else "single-v1"
  return name + ("-multi-turn" if turn == 2 else "")


@dataclasses.dataclass(frozen=True)
class GradeItem:
  question_id: str
  category: str
  questions: tuple[str, ...]  # the user turns
  answers: tuple[str, ...]  # the model's answers, one per turn
  reference: tuple[str, ...] = ()  # reference answers (math, reasoning, coding)


def judge_messages(
  prompts: Mapping[str, Mapping[str, Any]], item: GradeItem, turn: int
) -> tuple[str, list[dict[str, str]]]:
  """(prompt name, [system, user] messages) grading `item`'s answer to `turn` (1 or 2)."""
  name = judge_prompt_name(item.category, turn)
  if name not in prompts:
    raise ValueError(f"judge prompt {name!r} is not in the judge prompt file")
  if name.startswith("single-math") and len(item.reference) < turn:
    raise ValueError(f"question {item.question_id} ({item.category}) needs a reference answer for turn {turn}")
  fields = {
    "question": item.questions[0],
    "answer": item.answers[0],
    "question_1": item.questions[0],
    "answer_1": item.answers[0],
    "question_2": item.questions[1] if len(item.questions) > 1 else "",
    "answer_2": item.answers[1] if len(item.answers) > 1 else "",
    "ref_answer_1": item.reference[0] if item.reference else "",
    "ref_answer_2": item.reference[1] if len(item.reference) > 1 else "",
  }
  prompt = prompts[name]
  return name, [
    {"role": "system", "content": prompt["system_prompt"]},
    {"role": "user", "content": prompt["prompt_template"].format(**fields)},
  ]


def _turns(item: GradeItem) -> list[int]:
  return [t for t in (1, 2) if t <= min(len(item.questions), len(item.answers))]


def judge_with_chat(
  judge,
  items: Sequence[GradeItem],
  prompts: Mapping[str, Mapping[str, Any]],
  model: str,
  temperature: float = 0.0,
  max_tokens: int = 2048,
) -> list[dict[str, Any]]:
  """One judgment record per (question, turn)."""
  slots, requests = [], []
  for item in items:
    for turn in _turns(item):
      name, messages = judge_messages(prompts, item, turn)
      slots.append((item, turn, name, messages[1]["content"]))
      requests.append(ChatRequest.of(messages, temperature, max_tokens))
  replies = judge.chat(requests)
  records = []
  for (item, turn, name, user_prompt), reply in zip(slots, replies):
    rating = parse_rating(reply.text)
    records.append(
      {
        "question_id": item.question_id,
        "model": model,
        "judge": [judge.name, name],
        "user_prompt": user_prompt,
        "judgment": reply.text,
        "score": FAILED if rating is None else rating,
        "turn": turn,
      }
    )
  return records


def judge_with_scores(judge, items: Sequence[GradeItem], model: str) -> list[dict[str, Any]]:
  """Judgment records from a score judge: the raw score of each turn's answer in its conversation
  (on the judge's own scale, not 1-10; comparable between models graded by the same judge)."""
  convs, responses, slots = [], [], []
  for item in items:
    for turn in _turns(item):
      conv = []
      for t in range(turn):
        conv.append({"role": "user", "content": item.questions[t]})
        if t < turn - 1:
          conv.append({"role": "assistant", "content": item.answers[t]})
      convs.append(conv)
      responses.append(item.answers[turn - 1])
      slots.append((item, turn))
  scores = judge.score(convs, responses)
  return [
    {
      "question_id": item.question_id,
      "model": model,
      "judge": [judge.name, "score"],
      "user_prompt": "",
      "judgment": f"score judge {judge.name}: {score:.4f}",
      "score": float(score),
      "turn": turn,
    }
    for (item, turn), score in zip(slots, scores)
  ]


def _valid(score: Any, raw_scale: bool) -> bool:
  return isinstance(score, (int, float)) and (raw_scale or score != FAILED)


def category_table(
  records: Sequence[Mapping[str, Any]], categories: Mapping[str, str], raw_scale: bool = False
) -> list[dict[str, Any]]:
  """Rows per category (in MT-Bench's order, others after) and an `overall` row: mean rating of
  turn 1, of turn 2, of both, the number of graded turns and of failed gradings."""
  by_cat: dict[str, dict[int, list[float]]] = {}
  failed: dict[str, int] = {}
  for row in records:
    cat = categories.get(str(row["question_id"]), "unknown")
    if _valid(row.get("score"), raw_scale):
      by_cat.setdefault(cat, {1: [], 2: []}).setdefault(int(row.get("turn", 1)), []).append(float(row["score"]))
    else:
      failed[cat] = failed.get(cat, 0) + 1
      by_cat.setdefault(cat, {1: [], 2: []})
  mean = lambda xs: statistics.fmean(xs) if xs else None
  order = [c for c in CATEGORIES if c in by_cat] + sorted(set(by_cat) - set(CATEGORIES))
  rows = []
  for cat in order + ["overall"]:
    if cat == "overall":
      t1 = [s for c in by_cat.values() for s in c.get(1, [])]
      t2 = [s for c in by_cat.values() for s in c.get(2, [])]
      n_failed = sum(failed.values())
    else:
      t1, t2, n_failed = by_cat[cat].get(1, []), by_cat[cat].get(2, []), failed.get(cat, 0)
    rows.append(
      {
        "category": cat,
        "turn_1": mean(t1),
        "turn_2": mean(t2),
        "average": mean(t1 + t2),
        "graded": len(t1) + len(t2),
        "failed": n_failed,
      }
    )
  return rows


def bootstrap_mean_by_question(
  records: Sequence[Mapping[str, Any]], rounds: int, seed: int, raw_scale: bool = False
) -> tuple[Optional[float], Optional[float]]:
  """95% interval of the mean rating, resampling questions (both turns of a question together)."""
  by_q: dict[str, list[float]] = {}
  for r in records:
    if _valid(r.get("score"), raw_scale):
      by_q.setdefault(str(r["question_id"]), []).append(float(r["score"]))
  if not by_q or not rounds:
    return None, None
  sums = np.array([sum(v) for v in by_q.values()])  # [Q]
  counts = np.array([len(v) for v in by_q.values()])  # [Q]
  rng = np.random.default_rng(seed)
  means = []
  for _ in range(rounds):
    pick = rng.integers(0, len(sums), len(sums))
    means.append(sums[pick].sum() / counts[pick].sum())
  lo, hi = np.percentile(means, [2.5, 97.5])
  return float(lo), float(hi)


def table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  lines = ["| category | turn 1 | turn 2 | average | graded | failed |", "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
      f"| {r['category']} | {fmt(r['turn_1'])} | {fmt(r['turn_2'])} | {fmt(r['average'])} "
      f"| {r['graded']} | {r['failed']} |"
    )
  return "\n".join(lines)
