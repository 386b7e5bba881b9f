"""Append-only JSONL files: answers, judgments and the judge cache survive a crash.

Every write is flushed and fsynced, so a crash loses at most the line being written. That line is
always the last one; it is dropped when the file is reopened, and a rerun redoes only that item.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from typing import Any

from helpsteer_jax.data.text_files import text_lines


class JsonlLog:
  """One JSONL file written by appending; safe to share between threads."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    parent = os.path.dirname(self.path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    self._lock = threading.Lock()
    self._drop_partial_last_line()

  def _drop_partial_last_line(self) -> None:
    if not os.path.isfile(self.path):
      return
    with open(self.path, "rb+") as f:
      data = f.read()
      if data and not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)

  def read(self) -> list[dict[str, Any]]:
    if not os.path.isfile(self.path):
      return []
    rows = []
    lines = list(text_lines(self.path))
    for i, (line_no, line) in enumerate(lines):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if i + 1 < len(lines):  # only a crash mid-write leaves a partial line, always the last
          raise ValueError(f"{self.path}:{line_no}: corrupt line in the middle of the file") from None
    return rows

  def append(self, rows: Iterable[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not lines:
      return
    with self._lock, open(self.path, "a", encoding="utf-8") as f:
      f.write(lines)
      f.flush()
      os.fsync(f.fileno())
