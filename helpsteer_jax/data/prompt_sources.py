"""Prompts for generation jobs: a JSONL file, or the Arena-Hard v0.1, MT-Bench or AlpacaEval 2
question sets, with the ids their evaluators expect (Arena-Hard's `uid`, MT-Bench's `question_id`,
AlpacaEval's position "0" ... "804" in its reference outputs file).

The question sets ship with the package (`helpsteer_jax/data/files/`, see its README);
`HELPSTEER_DATA_DIR`, when set, is searched first. A file in neither is downloaded once from its
public source into `~/.cache/helpsteer_jax`. A JSONL prompt file may be local or a bucket URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import urllib.request
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import read_jsonl_rows
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.formats.messages import Message

ARENA_HARD_URL = "https://raw.githubusercontent.com/lmarena/arena-hard-auto/main/data/arena-hard-v0.1"
FASTCHAT_URL = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"
ALPACA_EVAL_URL = "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/main/results"

# (bundled path, public source) of each benchmark's question file: the evaluators read the same.
ARENA_HARD_QUESTIONS = ("eval/arena-hard-v0.1/question.jsonl", f"{ARENA_HARD_URL}/question.jsonl")
MT_BENCH_QUESTIONS = ("eval/mt_bench/question.jsonl", f"{FASTCHAT_URL}/mt_bench/question.jsonl")
# AlpacaEval's 805 instructions come with the reference model's outputs, in its own layout.
ALPACA_EVAL_REFERENCE = (
  "eval/alpaca_eval/gpt4_1106_preview_outputs.json",
  f"{ALPACA_EVAL_URL}/gpt4_1106_preview/model_outputs.json",
)
SOURCES = ("jsonl", "arena_hard", "mt_bench", "alpaca_eval")


@dataclasses.dataclass(frozen=True)
class PromptItem:
  """One prompt of a generation job: its id in the source file and the conversation to answer.

  A multi-turn question (MT-Bench's two turns) starts as its first turn (`turn` 1) with the user
  messages still to come in `later_turns`; the job answers each turn in order with its own chosen
  answers in the conversation (`follow_up`). `turn` 0 is a single-turn prompt."""

  id: str
  conversation: list[Message]
  question_id: str = ""
  turn: int = 0
  later_turns: tuple[str, ...] = ()

  def follow_up(self, answer: str) -> "PromptItem":
    """The next turn: this turn's conversation, `answer` to it, and the next user message. Its id
    names the turn, so its samples draw their own keys."""
    if not self.later_turns:
      raise ValueError(f"prompt {self.id}: no turn after turn {self.turn}")
    turn = self.turn + 1
    conversation = list(self.conversation) + [
      {"role": "assistant", "content": answer},
      {"role": "user", "content": self.later_turns[0]},
    ]
    return PromptItem(f"{self.question_id}/turn{turn}", conversation, self.question_id, turn, self.later_turns[1:])


# The files bundled with the package (tests, demo, default experiments).
BUNDLED_DATA_DIR = pathlib.Path(__file__).resolve().parent / "files"


def data_dirs() -> list[pathlib.Path]:
  """Where data files are looked up, in order: `HELPSTEER_DATA_DIR`, then the bundled files."""
  dirs = []
  if os.environ.get("HELPSTEER_DATA_DIR"):
    dirs.append(pathlib.Path(os.environ["HELPSTEER_DATA_DIR"]))
  dirs.append(BUNDLED_DATA_DIR)
  return dirs


def locate(relative: str, url: Optional[str] = None) -> pathlib.Path:
  """A bundled data file, or a cached download of it."""
  for root in data_dirs():
    if (root / relative).is_file():
      return root / relative
  cache = pathlib.Path(os.environ.get("HELPSTEER_CACHE", pathlib.Path.home() / ".cache" / "helpsteer_jax"))
  target = cache / relative
  if target.is_file():
    return target
  if url is None:
    raise FileNotFoundError(f"{relative} is not in any data folder ({[str(d) for d in data_dirs()]})")
  target.parent.mkdir(parents=True, exist_ok=True)
  try:
    with urllib.request.urlopen(url, timeout=60) as response:
      data = response.read()
  except OSError as e:
    raise FileNotFoundError(
      f"{relative} is not in any data folder and downloading {url} failed ({e}); "
      "set HELPSTEER_DATA_DIR to a folder holding it"
    ) from None
  tmp = target.with_suffix(".partial")
  tmp.write_bytes(data)
  tmp.replace(target)
  return target


def _later_turns(row: dict[str, Any], where: str) -> tuple[str, ...]:
  """The user messages after the first of a `turns` row (MT-Bench's layout); () for other rows."""
  turns = row.get("turns")
  if any(key in row for key in ("messages", "conversation", "context", "prompt")) or not isinstance(turns, list):
    return ()
  later = turns[1:]
  if not all(isinstance(t, str) and t.strip() for t in later):
    raise ValueError(f"{where}: every entry of 'turns' must be a non-empty string")
  return tuple(later)


def _conversation(row: dict[str, Any], where: str) -> list[dict[str, str]]:
  """A row's conversation: `messages`/`conversation`/`context` lists, or a `prompt`/`turns` string
  (the first turn; `_later_turns` gives the rest)."""
  for key in ("messages", "conversation", "context"):
    if key in row:
      messages = row[key]
      if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
      ):
        raise ValueError(f"{where}: '{key}' must be a list of {{'role', 'content'}} strings")
      break
  else:
    text = row.get("prompt")
    key = "prompt"
    if text is None and isinstance(row.get("turns"), list) and row["turns"]:
      text, key = row["turns"][0], "turns[0]"  # MT-Bench: the first turn (the rest follow it)
    if text is None:
      raise ValueError(f"{where}: no 'messages', 'conversation', 'context', 'prompt' or 'turns' field")
    if not isinstance(text, str):
      raise ValueError(f"{where}: field {key!r} must be a string, got {type(text).__name__} {text!r:.60}")
    messages = [{"role": "user", "content": text}]
  if not messages or not any(m["content"].strip() for m in messages if m["role"] == "user"):
    raise ValueError(f"{where}: empty prompt")
  return messages


def _alpaca_eval_items(file: str | os.PathLike) -> list[PromptItem]:
  """AlpacaEval's instructions (a JSON list of {instruction, output, ...}), id = position."""
  try:
    rows = json.loads(read_text(file))
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}: not valid JSON ({e})") from None
  if not isinstance(rows, list):
    raise ValueError(f"{file}: expected a JSON list of {{instruction, output}}")
  items = []
  for i, row in enumerate(rows):
    if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
      raise ValueError(f"{file}: entry {i} lacks a string 'instruction'")
    items.append(PromptItem(str(i), [{"role": "user", "content": row["instruction"]}]))
  return items


def load_prompts(source: str, path: str = "", limit: int = 0, start: int = 0, max_turns: int = 0) -> list[PromptItem]:
  """Prompts from `source` (one of `SOURCES`); `limit` 0 means all. A multi-turn question keeps
  up to `max_turns` turns (0: all; 1: the first turn alone, as a single-turn prompt)."""
  if source == "jsonl":
    if not path:
      raise ValueError("prompt source 'jsonl' needs a path")
    # A local path as a pathlib path: the messages below name it normalised (./p.jsonl as p.jsonl).
    file = path if storage.is_remote(path) else pathlib.Path(path)
    if not storage.is_file(file):
      raise FileNotFoundError(f"{path}: prompt file not found")
  elif source == "arena_hard":
    file = locate(*ARENA_HARD_QUESTIONS)
  elif source == "mt_bench":
    file = locate(*MT_BENCH_QUESTIONS)
  elif source == "alpaca_eval":
    file = locate(*ALPACA_EVAL_REFERENCE)
  else:
    raise ValueError(f"unknown prompt source {source!r}; expected one of {', '.join(SOURCES)}")
  if source == "alpaca_eval":
    items = _alpaca_eval_items(file)
  else:
    items = []
    for line_no, row in read_jsonl_rows(file):
      where = f"{file}:{line_no}"
      item_id = str(row.get("id", row.get("uid", row.get("question_id", f"line{line_no}"))))
      later = _later_turns(row, where)[: max(0, max_turns - 1) if max_turns else None]
      items.append(
        PromptItem(item_id, _conversation(row, where), item_id, 1, later)
        if later
        else PromptItem(item_id, _conversation(row, where))
      )
  if not items:
    raise ValueError(f"{file}: no prompts (the file is empty); expected one JSON object per line")
  ids = [item.id for item in items]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{file}: prompt ids are not unique")
  items = items[start:]
  return items[:limit] if limit else items
