"""A run folder's lock on an object store, which has no file locks.

The holder writes an owner record, `<folder>/.lock`, with an exclusive create (on GCS a
generation precondition, ifGenerationMatch=0, so of two runs starting at once one create fails),
reads it back to confirm it is the owner, and renews it every `renew_s` seconds from a background
thread. A record is stale, and is taken over with a log line, when its holder stopped renewing it
for `lease_s` seconds (a preempted TPU VM never comes back to clear it) or when it names a dead
process on this host. A clean exit deletes the record. Renewal reads the record first: a holder
that finds another owner there stops renewing and says so in the log.

Clocks: the record's times are the holder's own clock (UTC seconds); hosts of one cluster agree
to well within the default five-minute lease.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

import fsspec

logger = logging.getLogger(__name__)

LEASE_S = 300.0
RENEW_S = 60.0


class ObjectLockBusy(RuntimeError):
  """Another live run holds the folder; the message names it."""


def pid_alive(pid: Any) -> bool:
  """Whether `pid` names a live process on this host (the folder locks' staleness test)."""
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def describe(record: Optional[dict[str, Any]]) -> str:
  if not record:
    return "another process (no record yet)"
  return (
    f"{record.get('what', 'a run')} (pid {record.get('pid')} on host {record.get('host')}, "
    f"started {record.get('started')})"
  )


class ObjectLock:
  """Held between `acquire()` and `release()` (see the module docstring)."""

  def __init__(self, path: str, *, what: str, lease_s: float = LEASE_S, renew_s: float = RENEW_S):
    self.path = path
    self.what = what
    self.lease_s = lease_s
    self.renew_s = renew_s
    self.fs, self._key = fsspec.core.url_to_fs(path)
    self.token = uuid.uuid4().hex
    self.host = socket.gethostname()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

  def _read(self) -> Optional[dict[str, Any]]:
    self.fs.invalidate_cache(self._key)  # another host may have written it since
    try:
      with self.fs.open(self._key, "rb") as f:
        data = f.read()
    except FileNotFoundError:
      return None
    try:
      record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
      return {"unreadable": data[:200].decode("utf-8", "replace"), "renewed": 0}
    return record if isinstance(record, dict) else {"unreadable": str(record)[:200], "renewed": 0}

  def _record(self) -> dict[str, Any]:
    return {
      "what": self.what,
      "pid": os.getpid(),
      "host": self.host,
      "started": self._started,
      "token": self.token,
      "renewed": time.time(),
      "lease_s": self.lease_s,
    }

  def is_stale(self, record: dict[str, Any]) -> bool:
    lease = float(record.get("lease_s", self.lease_s))
    if time.time() - float(record.get("renewed", 0)) > lease:
      return True
    return record.get("host") == self.host and not pid_alive(record.get("pid"))

  def _busy(self, record: Optional[dict[str, Any]]) -> ObjectLockBusy:
    return ObjectLockBusy(
      f"{self.path.rsplit('/', 1)[0]} is in use by {describe(record)}: one run writes a folder "
      f"at a time; wait for that run to end, or, if it is gone, for its lease to lapse (it is "
      f"renewed every {self.renew_s:.0f} s and lapses after {self.lease_s:.0f} s), or delete "
      f"{self.path}"
    )

  def acquire(self) -> None:
    previous = self._read()
    if previous is not None:
      if not self.is_stale(previous):
        raise self._busy(previous)
      logger.warning("%s: taking over the lock of %s, which is no longer running", self.path, describe(previous))
      self.fs.rm(self._key)
    try:
      with self.fs.open(self._key, "xb") as f:  # GCS: ifGenerationMatch=0
        f.write(json.dumps(self._record()).encode())
    except (FileExistsError, OSError) as e:
      if isinstance(e, FileExistsError) or "412" in str(e):
        raise self._busy(self._read()) from None
      raise
    mine = self._read()
    if not mine or mine.get("token") != self.token:
      raise self._busy(mine)
    self._thread = threading.Thread(target=self._renew, name="run-folder-lease", daemon=True)
    self._thread.start()

  def _renew(self) -> None:
    while not self._stop.wait(self.renew_s):
      try:
        record = self._read()
        if not record or record.get("token") != self.token:
          logger.error(
            "%s: the lock now belongs to %s; this run no longer holds its folder", self.path, describe(record)
          )
          return
        with self.fs.open(self._key, "wb") as f:
          f.write(json.dumps(self._record()).encode())
      except OSError as e:  # a transient store error: the next renewal tries again
        logger.warning("%s: could not renew the lock (%s)", self.path, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      record = self._read()
      if record and record.get("token") == self.token:
        self.fs.rm(self._key)
    except OSError as e:
      logger.warning(
        "%s: could not remove the lock (%s); the next run takes it over when its lease lapses", self.path, e
      )
