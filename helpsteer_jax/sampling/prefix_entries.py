"""Which prompt prefix each entry of a prefix table holds, and which slots read it (host side).

A prompt's shared part is what related prompts start with: up to its last prefill break (where it
stops matching the conversation or the draft its requests share: sampling/chunked_prefill.py), or
the whole prompt when it has none (the n samples of one request). The table holds it rounded down
to whole attention blocks (models/decode/prefix_table.py says why), and only when that is at least
one block.

An entry is found by what its positions depend on: the tokens it holds and the prompt's chunks
that write them (a chunk's keys depend on where it starts, and its rounding on its width). A prompt whose prefix is held reads
that entry; otherwise it takes an entry no other slot reads, least recently used first, and
writes it; when every entry is read by other slots, the prompt is held whole in its own row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill, PrefixShare

EntryKey = tuple[tuple[int, ...], tuple[tuple[int, int], ...]]  # (the tokens held, the chunks that write them)


class PrefixEntries:
  def __init__(self, entries: int, num_slots: int, block: int):
    self.block = block
    self._key: list[Optional[EntryKey]] = [None] * entries
    self._last_use = [0] * entries
    self._uses = 0
    self._slot_entry = [-1] * num_slots  # the entry each slot reads, -1 for none
    self.written = 0  # prefills that wrote a prefix into an entry
    self.reused = 0  # prefills that read a prefix another prefill wrote

  def shared_length(self, prompt: Sequence[int], breaks: Sequence[int]) -> int:
    """Positions of `prompt` a table entry would hold: its shared part in whole blocks."""
    shared = max(breaks) if breaks else len(prompt)
    return shared // self.block * self.block

  def plan(
    self, slot: int, prompt: Sequence[int], breaks: Sequence[int], chunks: ChunkedPrefill
  ) -> Optional[PrefixShare]:
    """Where `prompt`, prefilled into `slot`, would keep its shared prefix (None: in its own row).
    Changes nothing: `assign` records the choice."""
    base = self.shared_length(prompt, breaks)
    if base < self.block:
      return None
    key = self._entry_key(prompt, breaks, base, chunks)
    if key in self._key:
      return PrefixShare(self._key.index(key), base, fresh=False)
    read = {e for s, e in enumerate(self._slot_entry) if s != slot and e >= 0}
    free = [e for e in range(len(self._key)) if e not in read]
    if not free:
      return None
    return PrefixShare(min(free, key=lambda e: self._last_use[e]), base, fresh=True)

  def assign(
    self, slot: int, prompt: Sequence[int], breaks: Sequence[int], chunks: ChunkedPrefill, share: Optional[PrefixShare]
  ) -> None:
    """Records that `slot` reads `share`'s entry (or none), which now holds `prompt`'s prefix."""
    self._slot_entry[slot] = -1 if share is None else share.entry
    if share is None:
      return
    self.written += share.fresh
    self.reused += not share.fresh
    self._key[share.entry] = self._entry_key(prompt, breaks, share.base, chunks)
    self._uses += 1
    self._last_use[share.entry] = self._uses

  def take(self, rows: np.ndarray, valid: np.ndarray) -> None:
    """Slots `rows` kept in that order (`valid` False: the slot holds nothing)."""
    self._slot_entry = [self._slot_entry[r] if v else -1 for r, v in zip(rows.tolist(), valid.tolist())]

  @staticmethod
  def _entry_key(prompt: Sequence[int], breaks: Sequence[int], base: int, chunks: ChunkedPrefill) -> EntryKey:
    pieces = tuple(piece for piece in chunks.segments(len(prompt), breaks) if piece[0] < base)
    return tuple(int(t) for t in prompt[:base]), pieces
