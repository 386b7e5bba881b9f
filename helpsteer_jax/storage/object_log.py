"""An append-only JSONL log on an object store, which has no append.

A bucket object is written whole or not at all, and cannot be extended. So each append becomes
one object, `<log>.parts/<first>-<last>.jsonl`, holding the lines of appends first..last (one
append when first == last): a crash loses at most the append being uploaded, and a rerun redoes
only that item. Reading lists the parts and concatenates them in order. `compact()` (called when a
run finishes) writes the parts as one object covering their whole range before deleting them; a
crash between the two leaves parts inside a wider range, which reading skips, so no line is ever
read twice. Zero-padded names keep `gsutil cat <log>.parts/*` in order too.

A plain object at `<log>` itself (a log copied in from a local run) is read first, before the
parts: the log carries on from it.

Writers sharing one log (several evaluations pointed at one judge cache) each create their part
only if no object has that name yet (a generation precondition); the loser of a race takes the
next free number, so no append overwrites another.
"""

from __future__ import annotations

import dataclasses
import os
import re

from helpsteer_jax.storage import files
from helpsteer_jax.storage.paths import join

PARTS_SUFFIX = ".parts"
_PART = re.compile(r"^(\d{8})-(\d{8})\.jsonl$")


@dataclasses.dataclass(frozen=True)
class Part:
  first: int
  last: int
  name: str


def parts_folder(log: str | os.PathLike) -> str:
  return os.fspath(log) + PARTS_SUFFIX


def part_name(first: int, last: int) -> str:
  return f"{first:08d}-{last:08d}.jsonl"


def _parts(log: str | os.PathLike) -> list[Part]:
  found = []
  for name in files.listdir(parts_folder(log)):
    match = _PART.match(name)
    if match:
      found.append(Part(int(match.group(1)), int(match.group(2)), name))
  return found


def covering_parts(parts: list[Part]) -> list[Part]:
  """The parts to read, in order: the widest range at each start, ranges inside a chosen one
  (left by a compaction cut short) skipped."""
  chosen: list[Part] = []
  for part in sorted(parts, key=lambda p: (p.first, -p.last)):
    if chosen and part.first <= chosen[-1].last:
      continue
    chosen.append(part)
  return chosen


def has_parts(log: str | os.PathLike) -> bool:
  return bool(_parts(log))


def log_exists(log: str | os.PathLike) -> bool:
  return files.is_file(log) or has_parts(log)


def read_log(log: str | os.PathLike, attempts: int = 5) -> bytes:
  """The log's content: the plain object (if any), then its parts in order. A part that vanishes
  between the listing and its read (the writer compacting a live log) restarts the read."""
  for attempt in range(attempts):
    try:
      chunks = [files.read_bytes(log)] if files.is_file(log) else []
      folder = parts_folder(log)
      chunks += [files.read_bytes(join(folder, part.name)) for part in covering_parts(_parts(log))]
      return b"".join(chunks)
    except FileNotFoundError:
      if attempt + 1 == attempts:
        raise
  raise AssertionError("unreachable")


class ObjectLog:
  """Appends to one log, by one writer at a time (the run folder's lock sees to that)."""

  def __init__(self, log: str | os.PathLike):
    self.log = os.fspath(log)
    self.folder = parts_folder(self.log)
    parts = _parts(self.log)
    self._next = max((part.last for part in parts), default=-1) + 1

  def append(self, data: bytes, attempts: int = 20) -> None:
    if not data:
      return
    for _ in range(attempts):
      try:
        files.create_exclusive(join(self.folder, part_name(self._next, self._next)), data)
      except FileExistsError:  # another writer took the number: move past every part there is
        self._next = max(self._next, max((p.last for p in _parts(self.log)), default=-1)) + 1
        continue
      self._next += 1
      return
    raise OSError(f"{self.folder}: no free part name after {attempts} tries (writers racing)")

  def compact(self) -> None:
    """Rewrites the parts as one object (see the module docstring for why a crash is safe)."""
    parts = covering_parts(_parts(self.log))
    if len(parts) <= 1:
      return
    data = b"".join(files.read_bytes(join(self.folder, part.name)) for part in parts)
    first, last = parts[0].first, parts[-1].last
    whole = part_name(first, last)
    files.write_atomic(join(self.folder, whole), data)
    for part in _parts(self.log):  # only what the new object covers: a part another writer
      if part.name != whole and first <= part.first and part.last <= last:  # added since stays
        files.remove(join(self.folder, part.name))

  def rewrite(self, data: bytes) -> None:
    """Replaces the whole log by `data` (a resumed run dropping rows it redoes): one object
    covering every range so far, so a crash before the old parts are deleted reads only it. A
    plain object at the log's own name is deleted last."""
    parts = _parts(self.log)
    last = max((part.last for part in parts), default=0)
    whole = part_name(0, last)
    files.write_atomic(join(self.folder, whole), data)
    for part in parts:
      if part.name != whole:
        files.remove(join(self.folder, part.name))
    if files.is_file(self.log):
      files.remove(self.log)
    self._next = last + 1
