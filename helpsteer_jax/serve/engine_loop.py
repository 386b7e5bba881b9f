"""The thread that owns the server's engines.

Every engine call (submit, step) happens on this one thread: the engines are not thread-safe, and
one thread stepping every busy engine is what batches concurrent HTTP requests together. A job is
a function run on the thread that submits engine requests and later reports `done(result)` or
`fail(error)` from their callbacks; the caller holds a `concurrent.futures.Future` for it.

Admission is bounded: past `max_open` unfinished jobs `submit` raises `Overloaded` at once (the
server answers 429) instead of queueing without limit. `close` stops admission; with
`cancel=False` the thread runs until every open job is done, otherwise it fails them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Done = Callable[[Any], None]
Fail = Callable[[BaseException], None]


class Steppable(Protocol):
  """What the loop needs of an engine (sampling/engine.py's Engine)."""

  @property
  def busy(self) -> bool: ...

  def step(self) -> None: ...


class Overloaded(Exception):
  """More jobs are open than the server admits."""


class Closing(Exception):
  """The server is shutting down."""


class EngineLoop:
  def __init__(self, max_open: int, idle_wait_s: float = 0.05):
    if max_open < 1:
      raise ValueError(f"max_open={max_open}; expected at least 1")
    self.max_open = max_open
    self._idle_wait_s = idle_wait_s
    self._engines: list[Steppable] = []
    self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    self._open: set[concurrent.futures.Future] = set()
    self._lock = threading.Lock()
    self._closing = False
    self._cancel = False
    self.failure: BaseException | None = None  # an engine step that raised: the loop stops
    self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

  def add_engine(self, engine: Steppable) -> None:
    """Before `start`: an engine this thread steps while it is busy (once, however often added)."""
    if self._thread.is_alive():
      raise RuntimeError("engines are added before the loop starts")
    if not any(e is engine for e in self._engines):  # models sharing an engine step it once
      self._engines.append(engine)

  def start(self) -> None:
    self._thread.start()

  @property
  def open_jobs(self) -> int:
    with self._lock:
      return len(self._open)

  @property
  def healthy(self) -> bool:
    return self._thread.is_alive() and not self._closing and self.failure is None

  def submit(self, start: Callable[[Done, Fail], None]) -> concurrent.futures.Future:
    """Runs `start(done, fail)` on the loop's thread; the future takes what `done` or `fail` gets."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    with self._lock:
      if self.failure is not None:
        raise Closing(f"the engine failed: {self.failure!r}")
      if self._closing:
        raise Closing("the server is shutting down")
      if len(self._open) >= self.max_open:
        raise Overloaded(f"{len(self._open)} requests are open, the most this server admits")
      self._open.add(future)

    def finish(set_outcome: Callable[[], None]) -> None:
      with self._lock:
        if future not in self._open:
          return  # already failed (by close or an engine failure)
        self._open.discard(future)
      set_outcome()

    def done(result: Any) -> None:
      finish(lambda: future.set_result(result))

    def fail(error: BaseException) -> None:
      finish(lambda: future.set_exception(error))

    def run() -> None:
      try:
        start(done, fail)
      except Exception as e:  # a bad job fails alone
        fail(e)

    self._inbox.put(run)
    return future

  def close(self, cancel: bool, timeout: float | None = None) -> None:
    """Stops admission; lets the open jobs finish (`cancel=False`) or fails them; waits for the
    thread up to `timeout` seconds."""
    with self._lock:
      self._closing = True
      self._cancel = self._cancel or cancel
    self._inbox.put(lambda: None)  # wakes an idle loop
    if self._thread.is_alive():
      self._thread.join(timeout)

  def _fail_open(self, error: BaseException) -> None:
    with self._lock:
      futures, self._open = list(self._open), set()
    for future in futures:
      future.set_exception(error)

  def _run(self) -> None:
    while True:
      busy = [e for e in self._engines if e.busy]
      try:
        job = self._inbox.get(timeout=None if not busy and not self._closing else 0.0)
        job()
        continue  # take every waiting job before the next step, so they share it
      except queue.Empty:
        pass
      if self._cancel or (self._closing and not busy and not self.open_jobs):
        break
      if not busy:
        try:
          self._inbox.get(timeout=self._idle_wait_s)()
        except queue.Empty:
          pass
        continue
      try:
        for engine in busy:
          engine.step()
      except Exception as e:
        log.exception("an engine step failed; failing every open request")
        self.failure = e
        self._fail_open(RuntimeError(f"the engine failed: {e!r}"))
        return
    if self._cancel:
      self._fail_open(Closing("the server shut down before the request finished"))
