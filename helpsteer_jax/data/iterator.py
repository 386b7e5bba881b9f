"""Deterministic, resumable batch iteration over a list of examples, sharded across processes.

The order of epoch e is a permutation seeded by (seed, e) (or the file order, unshuffled). Each
batch holds a contiguous run of that order, so the whole position in the data is
`{"epoch", "position", "seed", "num_examples"}`: `get_state()` after a batch and `set_state()` on a
fresh iterator yield exactly the batches that followed. The trainer stores that dict in its
checkpoint.

Every process plans the same global batch (tokenising its examples) and materialises only its own
rows: process p of P gets global rows [p * B/P, (p + 1) * B/P). Planning globally keeps the state
identical on every process, and lets a run resume on a different number of processes with the
same global batches. The cost is tokenising the global batch on each process, small next to a
train step of a model worth sharding.

At the end of an epoch the last, partial batch is dropped (`drop_remainder`, for training) or
emitted with padding rows (for evaluation); the next epoch starts with a fresh batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from helpsteer_jax.data.batching import Batcher
from helpsteer_jax.data.chat_encoding import ChatEncoder, Tokenized
from helpsteer_jax.data.examples import BuildStats, DataError, Example

log = logging.getLogger(__name__)

STATE_KEYS = ("epoch", "position", "seed", "num_examples")


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The example order of `epoch`: a permutation seeded by (seed, epoch), or 0..n-1."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def process_rows(global_rows: int, process_index: int, process_count: int) -> slice:
  """The global rows of one process: a contiguous block of `global_rows / process_count`."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index={process_index}, process_count={process_count}; expected 0 <= process_index < process_count"
    )
  if global_rows % process_count:
    raise ValueError(f"the global batch of {global_rows} rows does not split evenly over {process_count} processes")
  per = global_rows // process_count
  return slice(process_index * per, (process_index + 1) * per)


class DataIterator:
  """Yields batch dicts (see `batching`) of this process's rows; `get_state`/`set_state` resume.

  `examples` are tokenised lazily by `encoder`, `lookahead` at a time in one batched call (examples
  the length rules drop are skipped and counted in `encoder.stats`). `num_epochs=None` repeats
  forever.
  """

  def __init__(
    self,
    examples: Sequence[Example],
    encoder: ChatEncoder,
    batcher: Batcher,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    lookahead: int = 256,
  ):
    if not examples:
      raise DataError("no examples to iterate over")
    self.examples = examples
    self.encoder = encoder
    self.batcher = batcher
    self.seed = int(seed)
    self.shuffle = shuffle
    self.num_epochs = num_epochs
    self.drop_remainder = drop_remainder
    self.rows = process_rows(batcher.rows, process_index, process_count)
    self.lookahead = max(1, int(lookahead))
    self.epoch = 0
    self.position = 0
    self._order_epoch: Optional[int] = None
    self._order = np.zeros(0, np.int64)
    self._cache: dict[int, Optional[Tokenized]] = {}

  @property
  def stats(self) -> BuildStats:
    """Build counts (when made by `pipeline.make_iterator`) and length-rule counts so far."""
    return self.encoder.stats

  # -- state -----------------------------------------------------------------------------------

  def get_state(self) -> dict[str, int]:
    """The position after the last batch yielded, as plain ints (checkpoint it as is)."""
    return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_examples": len(self.examples)}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from a `get_state()` dict; the data must be the same (its size is checked)."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
      raise ValueError(f"iterator state {state!r} lacks {missing}; expected keys {STATE_KEYS}")
    n = int(state["num_examples"])
    if n != len(self.examples):
      raise ValueError(f"iterator state was saved over {n} examples; this data has {len(self.examples)}")
    position = int(state["position"])
    if not 0 <= position <= n:
      raise ValueError(f"iterator state position {position} is outside [0, {n}]")
    self.epoch, self.position, self.seed = int(state["epoch"]), position, int(state["seed"])
    self._order_epoch = None
    self._cache.clear()

  # -- length ----------------------------------------------------------------------------------

  def epoch_batches(self, num_epochs: int) -> list[int]:
    """The batches each of epochs 0 .. num_epochs - 1 yields, from the real examples after the
    length rules: the same plan as iteration (order, packing, remainder) with nothing built.

    Every example is tokenised once for this, by a separate encoder so that `stats` keeps
    counting only what training reads. A trainer calls it once, to know its total steps.
    """
    counter = ChatEncoder(self.encoder.tokenizer, self.encoder.max_length, self.encoder.truncation)
    tokenized: list[Optional[Tokenized]] = []
    for start in range(0, len(self.examples), self.lookahead):
      tokenized.extend(counter.encode_many(list(self.examples[start : start + self.lookahead])))
    counts = []
    for epoch in range(num_epochs):
      batches, plan = 0, self.batcher.start()
      for j in epoch_order(len(self.examples), self.seed, epoch, self.shuffle):
        example = tokenized[int(j)]
        if example is None:
          continue
        if not self.batcher.add(plan, example):  # full: the example opens the next batch
          batches, plan = batches + 1, self.batcher.start()
          self.batcher.add(plan, example)
        if self.batcher.is_full(plan):
          batches, plan = batches + 1, self.batcher.start()
      if not self.batcher.is_empty(plan) and not self.drop_remainder:
        batches += 1
      counts.append(batches)
    return counts

  # -- iteration -------------------------------------------------------------------------------

  def __iter__(self) -> "DataIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    n = len(self.examples)
    empty_epochs = 0
    while True:
      if self.num_epochs is not None and self.epoch >= self.num_epochs:
        raise StopIteration
      plan = self.batcher.start()
      i = self.position
      while i < n:
        example = self._get(i)
        if example is not None:
          if not self.batcher.add(plan, example):
            break
        i += 1
        if self.batcher.is_full(plan):
          break
      exhausted = i >= n
      partial = exhausted and not self.batcher.is_full(plan)
      keep = not self.batcher.is_empty(plan) and not (partial and self.drop_remainder)
      if exhausted:
        self._next_epoch()
        if not keep:
          # A dropped tail can end the epoch a resumed run started in; a whole epoch without a
          # batch means the data can never fill one.
          empty_epochs += 1
          if empty_epochs > 1:
            raise DataError(
              f"an epoch over {n} examples gave no batch: the examples the length "
              f"rules keep fill less than one batch ({self.encoder.stats.summary()}). "
              "Keep the partial batch with --config.data.drop_remainder=False, or "
              "lower --config.data.batch_size (with packing, rows of seq_len tokens)"
            )
          continue
      else:
        self._forget_before(i)
        self.position = i
      return self.batcher.build(plan, self.rows)

  # -- helpers ---------------------------------------------------------------------------------

  def _next_epoch(self) -> None:
    self.epoch += 1
    self.position = 0
    self._cache.clear()

  def _forget_before(self, i: int) -> None:
    for key in [k for k in self._cache if k < i]:
      del self._cache[key]

  def _ensure_order(self) -> None:
    if self._order_epoch != self.epoch:
      self._order = epoch_order(len(self.examples), self.seed, self.epoch, self.shuffle)
      self._order_epoch = self.epoch
      self._cache.clear()

  def _get(self, i: int) -> Optional[Tokenized]:
    """The tokenised example at position i of this epoch's order (None if dropped)."""
    self._ensure_order()
    if i not in self._cache:
      stop = min(len(self.examples), i + self.lookahead)
      stop = min([stop] + [k for k in self._cache if i < k < stop])  # never encode one twice
      chunk = [self.examples[int(j)] for j in self._order[i:stop]]
      for k, tokenized in enumerate(self.encoder.encode_many(chunk)):
        self._cache[i + k] = tokenized
    return self._cache[i]
