"""The decode engine's scheduler: a queue of requests kept flowing through a fixed number of slots.

In the manner of JetStream's orchestrator over its engine API: the device programs and their
typed state are in sampling/engine_api.py; this module decides what runs. Each `Request` (a
prompt, `n` samples, its sampling settings and key) is prefilled once, in fixed-size chunks that
later prompts with the same start reuse (sampling/chunked_prefill.py), and inserted into free
slots, one slot per sample; a jitted loop of single-token steps decodes every live slot at its own
position; a slot whose sample stops is retired and refilled from the queue, and nothing recompiles
as requests come and go. Rows never wait for the longest row of a batch, there is no filler row,
and attention reads the cache only up to the longest live slot.

The scheduler's choices (which request takes a free slot, when slots move to a smaller program)
change no request's tokens: those depend only on its prompt, settings and key.

Once nothing is queued and at most `tail_slots` slots are live (the end of a run), the live slots
move to a smaller decode program, and back to the full one when a request arrives.

The engine counts its own work (sampling/engine_stats.py); `stats()` returns it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union, cast

import jax
import numpy as np

from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill
from helpsteer_jax.sampling.engine_api import DeviceEngine, ModelEngine
from helpsteer_jax.sampling.engine_settings import EngineSettings
from helpsteer_jax.sampling.engine_stats import EngineStats
from helpsteer_jax.sampling.settings import SamplingSettings, bucket

__all__ = ["EarlyStop", "Engine", "EngineSettings", "Request"]


@dataclasses.dataclass(frozen=True)
class EarlyStop:
  """Ends a sample once `stop(tokens so far)` says so: checked once, when the sample has at least
  `after_tokens` tokens (the search's feedback whose opening already fails its rule)."""

  after_tokens: int
  stop: Callable[[list[int]], bool]


@dataclasses.dataclass
class Request:
  """`n` continuations of `prompt`; sample j draws from fold_in(key, j), or from fold_in(key,
  sample_indices[j]) when those are given (the rest of a request some of whose samples are
  already written, on a resume). `on_sample(request, j,
  tokens)` is called as each sample finishes and `on_done(request, samples)` with the n token
  lists (stop token excluded) when all have. Higher `priority` requests take free slots first (equal
  ones in submission order); the order changes no request's tokens. `prefill_breaks` are prompt
  positions where a prefill chunk must end (where the prompt stops sharing tokens with related
  ones: sampling/chunked_prefill.py); they should depend on the prompt alone. With `early_stop`,
  a sample it stops ends there (its index j joins `stopped_early`); the others are unchanged."""

  prompt: Sequence[int]
  settings: SamplingSettings
  key: np.ndarray  # uint32 [2] (sampling/keys.py)
  n: int = 1
  tag: str = ""
  on_done: Optional[Callable[["Request", list[list[int]]], None]] = None
  on_sample: Optional[Callable[["Request", int, list[int]], None]] = None
  priority: int = 0
  prefill_breaks: tuple[int, ...] = ()
  sample_indices: tuple[int, ...] = ()
  early_stop: Optional[EarlyStop] = None
  results: list = dataclasses.field(default_factory=list)
  stopped_early: set[int] = dataclasses.field(default_factory=set)

  @property
  def complete(self) -> bool:
    return all(r is not None for r in self.results)


# Programs already compiled ahead, by what selects them (the function, static values, argument
# shapes and placements): JAX keeps them compiled, and lowering one again to find that out would
# cost a new engine over the same model its trace, in the background thread, before its first
# decode step.
_COMPILED_AHEAD: set = set()


@dataclasses.dataclass
class _Pending:
  request: Request
  logits: Any = None  # [1, V] after the prompt, once prefilled
  inserted: int = 0  # samples inserted so far
  checked: set[int] = dataclasses.field(default_factory=set)  # samples its early_stop has read

  def next_sample(self) -> int:
    """The sample index (for its key) of the next sample to insert."""
    indices = self.request.sample_indices
    return indices[self.inserted] if indices else self.inserted


def _compile(fn: Any, args: tuple, kwargs: dict) -> Any:
  """Jitted `fn` compiled for exactly `args` and `kwargs`."""
  return fn.lower(*args, **kwargs).compile()


class _CompileAhead:
  """Compiles programs in a background thread while the host does other work (XLA compiles a
  program on one core); `wait` joins one before its first call, so none compiles twice."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self._pending: dict[tuple, concurrent.futures.Future] = {}
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

  def start(self, programs) -> None:
    if not self.enabled or not programs:
      return
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine-compile")
    for name in list(self._pending):
      self.wait(name)  # a program of the previous shapes still compiling
    for name, fn, args, kwargs in programs:
      leaves, structure = jax.tree.flatten((args, kwargs))
      describe = lambda a: (a.shape, str(a.dtype), getattr(a, "sharding", None)) if hasattr(a, "shape") else a
      selects = (fn, structure, tuple(describe(a) for a in leaves))  # static values as they are
      if selects in _COMPILED_AHEAD:
        continue
      _COMPILED_AHEAD.add(selects)
      self._pending[name] = self._pool.submit(_compile, fn, args, kwargs)

  def wait(self, name: tuple) -> None:
    future = self._pending.pop(name, None)
    if future is None:
      return
    try:
      future.result()
    except Exception as error:  # the call itself compiles it and reports what is wrong
      logging.debug("compiling %s ahead failed: %s", name, error)


class Engine:
  """Slots over one model (or any `DeviceEngine`, such as sampling/mock_engine.py). `submit`
  queues requests; `step` fills free slots, decodes, retires; `run` steps until every request is
  done. Requests may be submitted from `on_done` callbacks."""

  def __init__(self, model: Union[Llama, DeviceEngine], settings: EngineSettings):
    self.settings = settings
    self.device: DeviceEngine = ModelEngine(model, settings) if isinstance(model, Llama) else model
    self._state = None  # the device's decode state, from the first request
    self._owner: list[Optional[tuple[_Pending, int]]] = [None] * settings.num_slots
    self._queue: list[_Pending] = []  # by priority, then submission order
    self._stats = EngineStats(settings.num_slots)
    self._ahead = _CompileAhead(settings.compile_ahead)

  # -- public ----------------------------------------------------------------------------------

  @property
  def model(self) -> Optional[Llama]:
    return getattr(self.device, "model", None)

  @property
  def layout(self) -> str:
    """The decode layout in use (`EngineSettings.layout` resolved)."""
    return getattr(self.device, "layout", "model")

  @property
  def prefill(self) -> Optional[ChunkedPrefill]:
    """The chunked prefill with its kept chunks, for others that read the same prompts (a judge)."""
    return getattr(self.device, "chunks", None)

  @property
  def model_layout_scanned(self) -> bool:
    """Whether decoding runs the stacked layers as a scan (else a list: unrolled, switched or fused;
    see `EngineSettings.layout`)."""
    return getattr(self.device, "scanned", False)

  def submit(self, request: Request) -> None:
    length = len(request.prompt)
    if length == 0:
      raise ValueError("a request's prompt is empty; every prompt needs at least one token")
    if request.n < 1:
      raise ValueError(f"request n={request.n}; expected at least 1")
    if request.sample_indices and len(request.sample_indices) != request.n:
      raise ValueError(
        f"request n={request.n} with {len(request.sample_indices)} sample_indices; expected one index per sample"
      )
    if any(not 0 < b < length for b in request.prefill_breaks):
      raise ValueError(
        f"prefill_breaks={request.prefill_breaks}; expected positions inside the "
        f"prompt of {length} tokens (1 to {length - 1})"
      )
    if length + request.settings.max_new_tokens > self.device.context:
      raise ValueError(
        f"prompt of {length} tokens + max_new_tokens={request.settings.max_new_tokens} exceeds the "
        f"model's context of {self.device.context} positions"
      )
    request.results = [None] * request.n
    self._stats.tags[request.tag].requests += 1
    at = len(self._queue)
    while at > 0 and self._queue[at - 1].request.priority < request.priority:
      at -= 1
    self._queue.insert(at, _Pending(request))

  @property
  def busy(self) -> bool:
    return bool(self._queue) or self._live_slots() > 0

  def queued_samples(self, min_priority: Optional[int] = None) -> int:
    """Samples waiting for a slot (of requests at `min_priority` or above, when given)."""
    return sum(
      p.request.n - p.inserted for p in self._queue if min_priority is None or p.request.priority >= min_priority
    )

  @property
  def free_slots(self) -> int:
    """Slots a new sample could take: `num_slots` less the live ones (also while the tail's
    smaller program runs: a submitted request brings the full program back)."""
    return self.settings.num_slots - self._live_slots()

  def run(self) -> None:
    while self.busy:
      self.step()

  def step(self) -> None:
    """Fills free slots from the queue, runs one decode call, retires finished samples."""
    self._fill()
    if self._state is None or not self._live_slots():
      return
    self._resize_for_tail()
    self._ahead.wait(("decode", len(self._owner)))
    start = time.perf_counter()
    self._state, steps, generated = self.device.decode_steps(self._state)
    done, count = self.device.progress(self._state)
    self._stats.seconds["decode"] += time.perf_counter() - start
    self._stats.count_decode(steps, len(self._owner), generated)
    self._retire(self._stop_early(done, count), count)

  def stats(self) -> dict[str, Any]:
    """Slot use, seconds per phase, per-tag tokens and tokens/s over each tag's span (and with a
    prefix table, its use)."""
    chunks = self.prefill
    summary = self._stats.summary(dataclasses.asdict(chunks.counts) if chunks is not None else {})
    entries = getattr(self.device, "entries", None)
    if entries is not None:  # prefills that wrote a shared prefix into the table, and that read one
      summary["prefix_table"] = {"written": entries.written, "reused": entries.reused}
    return summary

  # -- internals --------------------------------------------------------------------------------

  def _live_slots(self) -> int:
    return sum(o is not None for o in self._owner)

  def _ensure_capacity(self, need_length: int, need_width: int) -> None:
    block = self.settings.attention_block
    round_up = lambda x: -(-x // block) * block
    if self._state is None:
      # At least 1024 positions (or the context) from the start: each growth recompiles the
      # decode step, and the search's later stages have the longest prompts.
      first = min(self.settings.cache_length or 1024, round_up(self.device.context))
      length = round_up(max(bucket(need_length, minimum=block), first))
      self._state = self.device.init_state(self.settings.num_slots, length, bucket(need_width))
      self._ahead.start(self.device.programs_ahead(self._state, self.settings.tail_slots))
      return
    length, width = self.device.capacity(self._state)
    if need_length > length or need_width > width:
      # Growth recompiles the decode step once per new size: sizes double.
      new_length = round_up(bucket(need_length, minimum=length)) if need_length > length else length
      new_width = bucket(need_width, minimum=width) if need_width > width else width
      self._state = self.device.grow(self._state, new_length, new_width)
      self._ahead.start(self.device.programs_ahead(self._state, self.settings.tail_slots))

  def _resize(self, rows: list[int], size: int) -> None:
    """Moves slots `rows` (in order) to slots 0.. of a program of `size` slots."""
    self._ahead.wait(("take", size))
    start = time.perf_counter()
    index = np.asarray(rows + [rows[-1] if rows else 0] * (size - len(rows)), np.int32)
    valid = np.arange(size) < len(rows)
    self._state = self.device.take_slots(self._state, index, valid)
    self._owner = [self._owner[r] for r in rows] + [None] * (size - len(rows))
    self._stats.seconds["resize"] += time.perf_counter() - start
    self._stats.resizes += 1

  def _resize_for_tail(self) -> None:
    """The tail's smaller program once nothing is queued and few slots are live."""
    tail = self.settings.tail_slots
    if self._queue or not tail or tail >= len(self._owner) or self._live_slots() > tail:
      return
    self._resize([b for b, o in enumerate(self._owner) if o is not None], tail)

  def _fill(self) -> None:
    if self._queue and self._state is not None and len(self._owner) < self.settings.num_slots:
      self._resize(list(range(len(self._owner))), self.settings.num_slots)  # back to full size
    while self._queue and None in self._owner:
      self._insert_next(self._owner.index(None))

  def _insert_next(self, slot: int) -> None:
    """The next sample of the queue's first request into `slot`, its prompt prefilled first."""
    pending = self._queue[0]
    request = pending.request
    settings = request.settings
    self._ensure_capacity(
      self.device.row_positions(slot, request.prompt, request.prefill_breaks, settings.max_new_tokens),
      settings.max_new_tokens,
    )
    tag = self._stats.tags[request.tag]
    start = time.perf_counter()
    self._state, logits, computed = self.device.prefill(
      self._state, slot, request.prompt, request.prefill_breaks, logits=pending.logits is None
    )
    if pending.logits is None:
      pending.logits = logits
    if computed:
      # Waited for, so that the prefill's time is counted as prefill, not as the next decode.
      jax.block_until_ready(pending.logits)
      self._stats.seconds["prefill"] += time.perf_counter() - start
      tag.prefill_tokens += computed
      start = time.perf_counter()
    tag.reused_tokens += len(request.prompt) - computed
    self._state = self.device.insert(self._state, pending.logits, slot, request.key, pending.next_sample(), settings)
    self._owner[slot] = (pending, pending.inserted)
    pending.inserted += 1
    tag.first_insert = tag.first_insert or time.perf_counter()
    if pending.inserted == request.n:
      self._queue.pop(0)
      pending.logits = None
    self._stats.seconds["insert"] += time.perf_counter() - start

  def _stop_early(self, done: np.ndarray, count: np.ndarray) -> np.ndarray:
    """`done` with the samples their request's `early_stop` ends now, those marked on device."""
    due = []
    for b, owner in enumerate(self._owner):
      if owner is None or done[b]:
        continue
      pending, j = owner
      early = pending.request.early_stop
      if early is not None and j not in pending.checked and count[b] >= early.after_tokens:
        due.append(b)
    if not due:
      return done
    out = self.device.tokens(self._state)
    stop = np.zeros(len(self._owner), bool)
    for b in due:
      pending, j = cast(tuple[_Pending, int], self._owner[b])
      pending.checked.add(j)
      early = cast(EarlyStop, pending.request.early_stop)
      if early.stop(out[b, : count[b]].tolist()):
        stop[b] = True
        pending.request.stopped_early.add(j)
        self._stats.tags[pending.request.tag].stopped_early += 1
    if not stop.any():
      return done
    self._state = self.device.stop_slots(self._state, stop)
    return done | stop

  def _retire(self, done: np.ndarray, count: np.ndarray) -> None:
    finished = [(b, o) for b, o in enumerate(self._owner) if o is not None and done[b]]
    if not finished:
      return
    start = time.perf_counter()
    out = self.device.tokens(self._state)
    callbacks: list[tuple[Callable[..., None], tuple]] = []
    for b, (pending, j) in finished:
      self._owner[b] = None
      request = pending.request
      request.results[j] = out[b, : count[b]].tolist()
      if request.on_sample is not None:
        callbacks.append((request.on_sample, (request, j, request.results[j])))
      tag = self._stats.tags[request.tag]
      tag.samples += 1
      tag.tokens += int(count[b])
      tag.last_retire = time.perf_counter()
      if request.complete and pending.inserted == request.n and request.on_done is not None:
        callbacks.append((request.on_done, (request, request.results)))
    # Free slots are marked on device only by the next insert; `live & done` rows do no work.
    self._stats.seconds["retire"] += time.perf_counter() - start
    for callback, args in callbacks:
      callback(*args)
