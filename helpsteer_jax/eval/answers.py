"""Model answers to benchmark questions: generated with the project's sampler, or read from a file.

The answer record written to `answers.jsonl` (one line per question):
    {"question_id": str, "model": str, "turns": [str, ...], "num_tokens": [int, ...],
     "finished": [bool, ...]}
`turns` holds one answer per user turn (MT-Bench has two, the other benchmarks one).

Existing answers can be evaluated without a model. `read_answers` accepts
- this project's `answers.jsonl`;
- arena-hard-auto model answers (`messages` whose assistant content is `{"answer": ...}`, or the
  older `choices[0].turns[*].content`);
- FastChat MT-Bench answers (`choices[0].turns` as strings);
- AlpacaEval outputs (a JSON list of `instruction` / `output`, matched by instruction text);
- a scaling-search output folder or its `results.jsonl` (the chosen answer `best.text` of each
  prompt; a multi-turn search's records, one per question and `turn`, give one answer per turn); the folder's `summary.json` also gives the run's token multiple and grid point, which
  the result file carries on to the tables and scaling plots.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

from tqdm.auto import tqdm

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import check_document_encodable
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.eval.answer_rows import answer_text_from_row
from helpsteer_jax.eval.sources import Question, instruction_index, read_jsonl
from helpsteer_jax.storage import object_log


@dataclasses.dataclass
class AnswerSet:
  """Answers by question id, plus what the source tells about how they were made."""

  turns: dict[str, list[str]]
  model: str
  scaling: Optional[dict[str, Any]] = None  # token multiple and grid point of a scaling run


def scaling_info(run_dir: str) -> Optional[dict[str, Any]]:
  """Token multiple and grid point of a scaling-search output folder (from its summary.json)."""
  path = storage.join(run_dir, "summary.json")
  if not storage.is_file(path):
    return None
  summary = json.loads(storage.read_text(path))
  config = summary.get("config") or {}
  search = config.get("search") or {}
  mode = search.get("mode")
  tree = mode in ("feedback_edit", "edit_without_feedback")  # a point of the scaling grid
  return {
    "run_dir": storage.absolute(run_dir),
    "label": config.get("label") or "",  # the table row the run is for
    # The ratio of sums; summaries written before it existed have only the per-prompt mean.
    "token_multiple": summary.get("token_multiple", summary.get("mean_token_multiple")),
    "token_account": summary.get("token_account", "generated"),
    "mode": mode,
    "drafts": search.get("num_drafts") if mode != "greedy" else None,
    # Effective feedbacks per draft, the grid's axis (older configs: sampled, capped by the filter).
    "feedbacks": _min_present(search.get("num_feedbacks"), search.get("max_effective_feedbacks")) if tree else None,
    "edits": search.get("num_edits") if tree else None,
    # A budgeted search (scaling/token_budget.py): its budget and settling margin, 0 when off.
    "token_budget": float(search.get("token_budget") or 0.0) if tree else None,
    "settle_margin": float(search.get("settle_margin") or 0.0) if tree else None,
    "roles": {k: config.get(k, {}).get("path") for k in ("policy", "feedback_model", "edit_model", "selector")},
  }


def _min_present(*values: Optional[int]) -> Optional[int]:
  present = [v for v in values if v is not None]
  return min(present) if present else None


def read_answers(path: str, questions: Sequence[Question], model: str = "") -> AnswerSet:
  """Answers to `questions` from an answer file or a scaling output folder (see module doc)."""
  scaling = None
  if storage.is_dir(path):
    scaling = scaling_info(path)
    path = storage.join(path, "results.jsonl")
  # A search's results.jsonl in a bucket may be an append log of parts only.
  if not object_log.log_exists(path):
    raise FileNotFoundError(f"{path}: answer file not found")
  if path.endswith(".json"):
    text = read_text(path)
    try:
      rows = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
    check_document_encodable(path, text, rows)
    if not isinstance(rows, list):
      raise ValueError(f"{path}: expected a JSON list of {{instruction, output}} answers")
    by_text = instruction_index(list(questions))
    turns, names = {}, set()
    for i, row in enumerate(rows):
      if not isinstance(row, dict) or not isinstance(row.get("output"), str):
        raise ValueError(f"{path}: entry {i} lacks a string 'output'")
      qid = by_text.get(row.get("instruction", ""))
      if qid is not None:
        turns[qid] = [row["output"]]
        names.add(str(row.get("generator", "")))
    return AnswerSet(turns, model or next(iter(names - {""}), "") or _stem(path))
  turns, names = {}, set()
  by_turn: dict[str, dict[int, str]] = {}  # a multi-turn search's records: one per question and turn
  for i, row in enumerate(read_jsonl(path)):
    qid = row.get("question_id", row.get("uid", row.get("id")))
    row_turns = answer_text_from_row(row)
    if qid is None or not row_turns:
      raise ValueError(f"{path}: row {i + 1} has no question id or no answer turns")
    if isinstance(row.get("turn"), int):
      by_turn.setdefault(str(qid), {}).setdefault(row["turn"], row_turns[0])
    else:
      turns[str(qid)] = row_turns
    names.add(str(row.get("model", row.get("model_id", ""))))
  for qid, answered in by_turn.items():  # turns 1..k in order, up to the first one missing
    turns[qid] = [answered[t] for t in range(1, _run_of(answered) + 1)]
  if scaling is None and os.path.basename(path) == "results.jsonl":
    scaling = scaling_info(os.path.dirname(path) or ".")
  name = (
    model
    or (os.path.basename(os.path.dirname(storage.absolute(path))) if scaling else "")
    or next(iter(names - {""}), "")
    or _stem(path)
  )
  return AnswerSet(turns, name, scaling)


def _run_of(answered: dict[int, str]) -> int:
  """How many turns from the first are answered without a gap."""
  n = 0
  while n + 1 in answered:
    n += 1
  return n


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def missing_answers(answers: AnswerSet, questions: Sequence[Question], turns_needed: int) -> list[str]:
  return [q.id for q in questions if len(answers.turns.get(q.id, [])) < turns_needed]


# -- generation -----------------------------------------------------------------------------------

# (conversations, temperature, names) -> (text, tokens, finished) per conversation; `names` name
# each conversation's sample (question id and turn), from which its random key derives.
GenerateFn = Callable[[list[list[dict[str, str]]], float, list[str]], list[tuple[str, int, bool]]]


def make_generate_fn(
  model: Any, tokenizer: Any, max_new_tokens: int, top_p: Optional[float], batch_size: int, seed: int = 0
) -> GenerateFn:
  """(conversations, temperature, names) -> (text, tokens, finished) per conversation; each
  conversation samples from the key of (seed, its name), whatever else is in the batch."""
  from helpsteer_jax.sampling.generate import generate_samples, sampling_settings

  def fn(
    conversations: list[list[dict[str, str]]], temperature: float, names: list[str]
  ) -> list[tuple[str, int, bool]]:
    settings = sampling_settings(
      tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p if temperature > 0 else None
    )
    samples = generate_samples(
      model, tokenizer, conversations, settings, n=1, seed=seed, batch_size=batch_size, names=names
    )
    return [(s[0].text, s[0].num_tokens, s[0].finished) for s in samples]

  return fn


def generate_answers(
  questions: Sequence[Question],
  generate: GenerateFn,
  model_name: str,
  temperature_of: Callable[[Question], float],
  on_batch: Callable[[list[dict[str, Any]]], None],
  batch_size: int = 8,
  system_prompt: str = "",
  seed: int = 0,
) -> None:
  """Answers every turn of `questions`, `batch_size` questions at a time, in order.

  Turn t of a question is asked after the model's own answers to turns 1..t-1, as in MT-Bench.
  Questions of one batch that share a temperature are generated together; each finished batch is
  handed to `on_batch` (which appends it to the answer file) before the next one starts. Each
  answer's random key derives from (seed, question id, turn), so a question gets the same answer
  alone, in any batch, or after a resume.
  """
  with tqdm(total=len(questions), desc=f"answers ({model_name})", unit="question") as bar:
    for start in range(0, len(questions), batch_size):
      batch = list(questions[start : start + batch_size])
      records: list[dict[str, Any]] = [
        {"question_id": q.id, "model": model_name, "turns": [], "num_tokens": [], "finished": []} for q in batch
      ]
      groups: dict[float, list[int]] = {}
      for i, q in enumerate(batch):
        groups.setdefault(float(temperature_of(q)), []).append(i)
      for temperature, members in groups.items():
        for turn in range(max(len(batch[i].turns) for i in members)):
          active = [i for i in members if turn < len(batch[i].turns)]
          conversations = []
          for i in active:
            conv = [{"role": "system", "content": system_prompt}] if system_prompt else []
            for t in range(turn + 1):
              conv.append({"role": "user", "content": batch[i].turns[t]})
              if t < turn:
                conv.append({"role": "assistant", "content": records[i]["turns"][t]})
            conversations.append(conv)
          names = [f"{seed}/{batch[i].id}/turn{turn}" for i in active]
          for i, (text, tokens, finished) in zip(active, generate(conversations, temperature, names)):
            records[i]["turns"].append(text)
            records[i]["num_tokens"].append(tokens)
            records[i]["finished"].append(finished)
      on_batch(records)
      bar.update(len(batch))
