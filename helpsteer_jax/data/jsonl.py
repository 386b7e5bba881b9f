"""JSON-lines files, read and appended the one way the package does it.

- `read_jsonl_rows(path)`: (line number, row) for each non-blank line; a bad line raises
  `DataError` naming the file and line (and, through `text_files`, the byte offset of a non-UTF-8
  byte). With `torn_tail_ok`, a last line cut short by a crash mid-write is dropped instead.
  A string holding a lone surrogate (a JSON escape such as `"\\ud800"` without its pair), which
  no UTF-8 tokenizer or writer accepts, raises `DataError` naming the file and line as well.
- `JsonlAppender(path)`: an append-only log (search results, answers, judgments, the judge
  cache). Every append is flushed and fsynced, so a crash loses at most the line being written;
  that line is always the last and is cut off when the file is reopened, and a rerun redoes only
  that item. Safe to share between threads.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.examples import DataError
from helpsteer_jax.data.text_files import text_lines
from helpsteer_jax.storage import object_log


class UnencodableText(DataError):
  """A string in the data holds a lone surrogate; the message names the file, line and field."""


# A surrogate escape (\ud800-\udfff): only a line holding one can decode to a lone surrogate, so
# lines without it skip the walk over their values.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")  # one JSON escape (`\\` consumed whole)


def _unencodable(value: Any, where: str = "") -> Optional[tuple[str, str]]:
  """(field path, text up to the bad character) of the first string under `value` (keys
  included) that UTF-8 cannot encode, a lone surrogate; None when every string can be."""
  if isinstance(value, str):
    try:
      value.encode("utf-8")
    except UnicodeEncodeError as e:
      return where or "(the value)", value[max(0, e.start - 20) : e.start + 1]
    return None
  if isinstance(value, dict):
    items = [(f"{where}.{key}" if where else str(key), key, item) for key, item in value.items()]
  elif isinstance(value, list):
    items = [(f"{where}[{i}]", "", item) for i, item in enumerate(value)]
  else:
    return None
  for name, key, item in items:
    found = _unencodable(key, name) or _unencodable(item, name)
    if found is not None:
      return found
  return None


def _lone_surrogate_offset(text: str) -> Optional[int]:
  """The offset in JSON `text` of the first surrogate escape that has no pair, or None."""
  pending, previous_end = None, -1  # an unpaired high surrogate's offset; the last escape's end
  for m in _ESCAPE.finditer(text):
    code = int(m.group(1), 16) if m.group(1) else -1
    if pending is not None:
      if 0xDC00 <= code <= 0xDFFF and m.start() == previous_end:
        pending, previous_end = None, m.end()
        continue
      return pending
    if 0xD800 <= code <= 0xDBFF:
      pending = m.start()
    elif 0xDC00 <= code <= 0xDFFF:
      return m.start()
    previous_end = m.end()
  return pending


def check_encodable(path: str | os.PathLike, line_no: int, value: Any) -> None:
  """`UnencodableText` naming `path:line_no` if a string under `value` holds a lone surrogate."""
  found = _unencodable(value)
  if found is not None:
    field, text = found
    raise UnencodableText(
      f"{path}:{line_no}: field {field!r} holds a lone surrogate (...{text!r}): text "
      "that cannot be encoded as UTF-8, from a JSON escape such as \\ud800 without "
      "its pair; fix or drop that line"
    )


def check_document_encodable(path: str | os.PathLike, text: str, value: Any) -> None:
  """`check_encodable` for `value` parsed from the whole JSON document `text` (a `.json` file),
  naming the line of the first unpaired surrogate escape."""
  if not _SURROGATE_ESCAPE.search(text):
    return
  offset = _lone_surrogate_offset(text)
  check_encodable(path, 1 if offset is None else text.count("\n", 0, offset) + 1, value)


def parse_jsonl_line(path: str | os.PathLike, line_no: int, line: str, objects: bool = True) -> Any:
  """One line as JSON (an object when `objects`), or a `DataError` naming `path:line_no`."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(
      f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
    ) from None
  if objects and not isinstance(row, dict):
    raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
  if _SURROGATE_ESCAPE.search(line):
    check_encodable(path, line_no, row)
  return row


def read_jsonl_rows(
  path: str | os.PathLike, *, objects: bool = True, torn_tail_ok: bool = False
) -> list[tuple[int, Any]]:
  """(1-based line number, row) of every non-blank line of `path`."""
  lines = [(n, line) for n, line in text_lines(path) if line.strip()]
  rows = []
  for i, (line_no, line) in enumerate(lines):
    try:
      rows.append((line_no, parse_jsonl_line(path, line_no, line, objects)))
    except UnencodableText:
      raise  # a whole line (a torn one would not parse)
    except DataError:
      if torn_tail_ok and i + 1 == len(lines) and not line.endswith("\n"):
        break  # the line a crash cut short: the item is redone
      if torn_tail_ok:
        raise DataError(
          f"{path}:{line_no}: corrupt line in the middle of the file (only the last line can be cut short by a crash)"
        ) from None
      raise
  return rows


def read_jsonl(path: str | os.PathLike, **kwargs: Any) -> list[Any]:
  """The rows of `read_jsonl_rows`, without their line numbers."""
  return [row for _, row in read_jsonl_rows(path, **kwargs)]


class JsonlAppender:
  """One JSONL file written by appending (see the module docstring)."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._lock = threading.Lock()
    self._objects = object_log.ObjectLog(self.path) if storage.is_remote(self.path) else None
    if self._objects is None:
      parent = os.path.dirname(self.path)
      if parent:
        os.makedirs(parent, exist_ok=True)
      self._drop_partial_last_line()

  def _drop_partial_last_line(self) -> None:
    if not os.path.isfile(self.path):
      return
    with open(self.path, "rb+") as f:
      data = f.read()
      if data and not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)

  def exists(self) -> bool:
    return object_log.log_exists(self.path) if self._objects else os.path.isfile(self.path)

  def read(self) -> list[dict[str, Any]]:
    if not self.exists():
      return []
    return read_jsonl(self.path, torn_tail_ok=True)

  def append(self, rows: Iterable[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not lines:
      return
    with self._lock:
      if self._objects is not None:
        self._objects.append(lines.encode("utf-8"))
        return
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())

  def rewrite(self, text: str) -> None:
    """Replaces the log's content by `text` (whole lines), atomically."""
    with self._lock:
      if self._objects is not None:
        self._objects.rewrite(text.encode("utf-8"))
      else:
        storage.write_atomic(self.path, text)

  def compact(self) -> None:
    """In a bucket, rewrites the appended objects as one (a no-op for a local file)."""
    if self._objects is not None:
      with self._lock:
        self._objects.compact()
