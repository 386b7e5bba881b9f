"""The folder a run writes (a search's output_dir, an evaluation's or a training run's workdir):
checked writable before any work, and held by one run at a time.

    with claim_run_folder(config.output_dir, what="scaling search"):
      ...

Two runs appending to one `results.jsonl` or saving into one checkpoint folder would interleave
their rows and steps, so the holder takes an OS file lock on `<folder>/.lock` (`fcntl.flock`,
released by the OS when the process ends, however it ends) and records its pid, host and start
time there, so a second run fails at once naming the holder. A record left by a holder that is gone
(killed before it could clear it) is taken over with a log line. On a filesystem without locks the
record alone decides: a live pid on this host holds the folder, a dead one is stale, and a record
from another host is trusted (its pid cannot be checked from here).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.storage.object_lock import ObjectLock, ObjectLockBusy, pid_alive

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# flock on these filesystems fails with one of these instead of locking.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunFolderError(OSError):
  """The run's folder cannot be created or written; the message names it."""


class RunFolderBusy(RuntimeError):
  """Another live run holds the folder; the message names it (pid, host, start, what)."""


def check_writable(folder: str | os.PathLike) -> str:
  """Creates `folder` if needed and writes, syncs and removes a probe file in it, so a folder that
  cannot be written fails before any model loads rather than at the first result."""
  folder = os.fspath(folder)
  if storage.is_remote(folder):
    return _check_writable_remote(folder)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise RunFolderError(f"{folder}: cannot create the output folder ({e.strerror or e})") from None
  probe = os.path.join(folder, f".write_probe.{os.getpid()}")
  try:
    with open(probe, "wb") as f:
      f.write(b"probe\n")
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise RunFolderError(
      f"{folder}: the output folder cannot be written ({e.strerror or e}); choose a writable folder"
    ) from None
  return folder


def _check_writable_remote(folder: str) -> str:
  probe = storage.join(folder, f".write_probe.{socket.gethostname()}.{os.getpid()}")
  try:
    storage.write_atomic(probe, b"probe\n")
    storage.remove(probe)
  except storage.MissingStorageClient:
    raise
  except OSError as e:
    raise RunFolderError(
      f"{folder}: the output folder cannot be written ({e}); check the bucket name and this machine's credentials"
    ) from None
  return folder


def _read_record(fd: int) -> Optional[dict[str, Any]]:
  os.lseek(fd, 0, os.SEEK_SET)
  data = b""
  while chunk := os.read(fd, 4096):
    data += chunk
  if not data.strip():
    return None
  try:
    record = json.loads(data)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {"unreadable": data[:200].decode("utf-8", "replace")}
  return record if isinstance(record, dict) else {"unreadable": str(record)[:200]}


def _write_record(fd: int, record: dict[str, Any]) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, (json.dumps(record) + "\n").encode())
  os.fsync(fd)


def describe_holder(record: Optional[dict[str, Any]]) -> str:
  if not record:
    return "another process (no record yet)"
  if "unreadable" in record:
    return f"another process (unreadable record {record['unreadable']!r})"
  return (
    f"{record.get('what', 'a run')} (pid {record.get('pid')} on host {record.get('host')}, "
    f"started {record.get('started')})"
  )


def is_stale(record: Optional[dict[str, Any]], host: str) -> bool:
  """A record whose holder is known to be gone: its pid is not alive on this host."""
  if not record or "unreadable" in record:
    return True
  return record.get("host") == host and not pid_alive(record.get("pid"))


def _busy(folder: str, path: str, record: Optional[dict[str, Any]]) -> RunFolderBusy:
  return RunFolderBusy(
    f"{folder} is in use by {describe_holder(record)}: one run writes a folder at a time; wait "
    f"for that run to end or choose another folder (the lock is {path})"
  )


@contextlib.contextmanager
def claim_run_folder(
  folder: str | os.PathLike, *, what: str = "run", enabled: bool = True, lock_name: str = LOCK_NAME
) -> Iterator[None]:
  """Checks `folder` writable and holds its lock for the block; `enabled=False` (processes other
  than the one that writes, in a multi-process run) does neither. `lock_name`: the lock file in
  `folder`, for a run whose output is one file of a shared folder (an annotation's output)."""
  if not enabled:
    yield
    return
  folder = check_writable(folder)
  if storage.is_remote(folder):
    lock = ObjectLock(storage.join(folder, lock_name), what=what)
    try:
      lock.acquire()
    except ObjectLockBusy as e:
      raise RunFolderBusy(str(e)) from None
    try:
      yield
    finally:
      lock.release()
    return
  path = os.path.join(folder, lock_name)
  host = socket.gethostname()
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      locked = True
    except BlockingIOError:
      raise _busy(folder, path, _read_record(fd)) from None
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        raise
      locked = False
    previous = _read_record(fd)
    if previous and previous.get("pid") == os.getpid() and previous.get("host") == host:
      # The flock of another open file in this process would have failed above; this is an
      # unlocked filesystem, where only the record tells.
      raise _busy(folder, path, previous)
    if not locked and previous and not is_stale(previous, host):
      raise _busy(folder, path, previous)
    if previous:
      logger.warning("%s: taking over the lock of %s, which is no longer running", folder, describe_holder(previous))
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _write_record(fd, {"what": what, "pid": os.getpid(), "host": host, "started": started})
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # a clean exit leaves no record to take over
      if locked:
        fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
