"""UTF-8 text of input files, with undecodable bytes reported by file, line and byte offset.

Python's text mode raises `UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position
8191` for a stray Latin-1 byte: a position in a read buffer, not in the file, and no file name.
Every JSONL/JSON reader of the package reads through these two functions instead.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
from collections.abc import Iterator
from typing import IO

from helpsteer_jax import storage
from helpsteer_jax.data.examples import DataError
from helpsteer_jax.storage import object_log


def _not_utf8(path: str, line_no: int, column: int, offset: int, byte: int) -> DataError:
  return DataError(
    f"{path}:{line_no}: not UTF-8 text (byte 0x{byte:02x} at column {column} of the "
    f"line, byte offset {offset} of the file); expected a UTF-8 encoded file "
    "(re-save it as UTF-8)"
  )


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
  """(1-based line number, line text with its newline) for each line; `.gz` files are
  decompressed. A line that is not UTF-8 raises `DataError` naming the file, line and offset."""
  path = os.fspath(path)
  offset = 0
  with _open_binary(path) as f:
    for line_no, raw in enumerate(f, 1):
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise _not_utf8(path, line_no, e.start + 1, offset + e.start, raw[e.start]) from None
      offset += len(raw)
      yield line_no, text


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
  """A local file or an object, gunzipped if .gz; in a bucket an append log (its plain object and
  its parts, see storage.object_log) reads as one stream."""
  if storage.is_remote(path) and object_log.has_parts(path):
    raw: IO[bytes] = io.BytesIO(object_log.read_log(path))
  else:
    raw = storage.open_file(path, "rb")
  with raw:
    if path.endswith(".gz"):
      with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        yield unzipped  # type: ignore[misc]
    else:
      yield raw


def read_text(path: str | os.PathLike) -> str:
  """The whole file as UTF-8 text (a `.json` document); errors as in `text_lines`."""
  path = os.fspath(path)
  with _open_binary(path) as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line_start = data.rfind(b"\n", 0, e.start) + 1
    raise _not_utf8(path, data.count(b"\n", 0, e.start) + 1, e.start - line_start + 1, e.start, data[e.start]) from None
