"""Prompts for generation jobs: a JSONL file, or the Arena-Hard v0.1 / MT-Bench question sets.

The question sets ship with the package (`helpsteer_jax/data/files/`, see its README);
`HELPSTEER_DATA_DIR`, when set, is searched first. A file in neither is downloaded once from its
public source into `~/.cache/helpsteer_jax`. A JSONL prompt file may be local or a bucket URL.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.request
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import read_jsonl_rows
from helpsteer_jax.formats.messages import Message

_SOURCES = {
    "arena_hard": ("eval/arena-hard-v0.1/question.jsonl",
                   "https://raw.githubusercontent.com/lmarena/arena-hard-auto/main/data/arena-hard-v0.1/question.jsonl"),
    "mt_bench": ("eval/mt_bench/question.jsonl",
                 "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench/question.jsonl"),
}


@dataclasses.dataclass(frozen=True)
class PromptItem:
  """One prompt of a generation job: its id in the source file and the conversation to answer."""

  id: str
  conversation: list[Message]


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


def _conversation(row: dict[str, Any], where: str) -> list[dict[str, str]]:
  """A row's conversation: `messages`/`conversation`/`context` lists, or a `prompt`/`turns` string."""
  for key in ("messages", "conversation", "context"):
    if key in row:
      messages = row[key]
      if not isinstance(messages, list) or not all(
          isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
          for m in messages):
        raise ValueError(f"{where}: '{key}' must be a list of {{'role', 'content'}} strings")
      break
  else:
    text = row.get("prompt")
    key = "prompt"
    if text is None and isinstance(row.get("turns"), list) and row["turns"]:
      text, key = row["turns"][0], "turns[0]"  # MT-Bench: the search answers the first turn
    if text is None:
      raise ValueError(f"{where}: no 'messages', 'conversation', 'context', 'prompt' or 'turns' field")
    if not isinstance(text, str):
      raise ValueError(f"{where}: field {key!r} must be a string, got {type(text).__name__} {text!r:.60}")
    messages = [{"role": "user", "content": text}]
  if not messages or not any(m["content"].strip() for m in messages if m["role"] == "user"):
    raise ValueError(f"{where}: empty prompt")
  return messages


def load_prompts(source: str, path: str = "", limit: int = 0, start: int = 0) -> list[PromptItem]:
  """Prompts from `source` in ('jsonl', 'arena_hard', 'mt_bench'); `limit` 0 means all."""
  if source == "jsonl":
    if not path:
      raise ValueError("prompt source 'jsonl' needs a path")
    # A local path as a pathlib path: the messages below name it normalised (./p.jsonl as p.jsonl).
    file = path if storage.is_remote(path) else pathlib.Path(path)
    if not storage.is_file(file):
      raise FileNotFoundError(f"{path}: prompt file not found")
  elif source in _SOURCES:
    file = locate(*_SOURCES[source])
  else:
    raise ValueError(f"unknown prompt source {source!r}; expected 'jsonl', 'arena_hard' or 'mt_bench'")
  items = []
  for line_no, row in read_jsonl_rows(file):
    where = f"{file}:{line_no}"
    item_id = row.get("id", row.get("uid", row.get("question_id", f"line{line_no}")))
    items.append(PromptItem(str(item_id), _conversation(row, where)))
  if not items:
    raise ValueError(f"{file}: no prompts (the file is empty); expected one JSON object per line")
  ids = [item.id for item in items]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{file}: prompt ids are not unique")
  items = items[start:]
  return items[:limit] if limit else items
