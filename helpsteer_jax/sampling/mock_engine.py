"""A device engine with no model, whose tokens can be worked out by hand: for the scheduler's tests.

Sample s of a prompt p produces tokens t_i = (sum(p) + 10 * s + i) % vocab, i = 0, 1, ..., ending
at a stop token (not kept) or at its max_new_tokens. Temperatures and keys are ignored: the
scheduler never looks at them. The state is numpy arrays on the host, and the engine logs what the
scheduler asked of it (inserts, decode calls and their slot counts, growths, moves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from helpsteer_jax.sampling.engine_settings import EngineSettings
from helpsteer_jax.sampling.settings import SamplingSettings


def expected_tokens(
  prompt: Sequence[int], sample: int, max_new: int, stop_ids: Sequence[int] = (), vocab: int = 1000
) -> list[int]:
  """The tokens `MockEngine` gives sample `sample` of `prompt`: the rule above, by hand."""
  tokens = []
  for i in range(max_new):
    token = (sum(prompt) + 10 * sample + i) % vocab
    if token in stop_ids:
      break
    tokens.append(token)
  return tokens


@dataclasses.dataclass
class MockState:
  start: np.ndarray  # [B] int: sum(prompt) + 10 * sample
  out: np.ndarray  # [B, W] int
  count: np.ndarray  # [B] int
  done: np.ndarray  # [B] bool
  live: np.ndarray  # [B] bool
  max_new: np.ndarray  # [B] int
  cache_length: int

  @property
  def num_slots(self) -> int:
    return len(self.start)


@dataclasses.dataclass
class MockEngine:
  settings: EngineSettings
  context: int = 4096
  vocab: int = 1000
  log: list = dataclasses.field(default_factory=list)  # (what, details) in call order

  def row_positions(self, slot: int, prompt: Sequence[int], breaks: Sequence[int], max_new_tokens: int) -> int:
    return len(prompt) + max_new_tokens

  def init_state(self, num_slots: int, cache_length: int, width: int) -> MockState:
    self.log.append(("init", (num_slots, cache_length, width)))
    zeros = lambda dtype=int: np.zeros((num_slots,), dtype)
    return MockState(
      start=zeros(),
      out=np.zeros((num_slots, width), int),
      count=zeros(),
      done=zeros(bool),
      live=zeros(bool),
      max_new=zeros(),
      cache_length=cache_length,
    )

  def capacity(self, state: MockState) -> tuple[int, int]:
    return state.cache_length, state.out.shape[1]

  def prefill(self, state: MockState, slot, prompt, breaks, logits):
    return state, (np.asarray([sum(prompt)]) if logits else None), len(prompt)

  def insert(self, state: MockState, logits, slot: int, key, sample: int, settings: SamplingSettings) -> MockState:
    self.log.append(("insert", (slot, int(logits[0]), sample)))
    state.start[slot] = int(logits[0]) + 10 * sample
    state.out[slot] = self.settings.pad_id
    state.live[slot], state.count[slot], state.done[slot] = True, 0, False
    state.max_new[slot] = settings.max_new_tokens
    self._emit(state, slot)  # the first token comes with the insert, as from the prefill's logits
    return state

  def _emit(self, state: MockState, slot: int) -> bool:
    token = (state.start[slot] + state.count[slot]) % self.vocab
    stopped = token in self.settings.stop_token_ids
    if not stopped:
      state.out[slot, state.count[slot]] = token
      state.count[slot] += 1
    state.done[slot] = stopped or state.count[slot] >= state.max_new[slot]
    return not stopped

  def decode_steps(self, state: MockState):
    self.log.append(("decode", state.num_slots))
    freed_at_entry = int(np.sum(state.live & state.done))
    steps = generated = 0
    while steps < self.settings.steps_per_call:
      active = np.flatnonzero(state.live & ~state.done)
      if not len(active) or int(np.sum(state.live & state.done)) > freed_at_entry:
        break
      generated += sum(self._emit(state, int(b)) for b in active)
      steps += 1
    return state, steps, generated

  def progress(self, state: MockState):
    return state.done.copy(), state.count.copy()

  def tokens(self, state: MockState) -> np.ndarray:
    return state.out.copy()

  def grow(self, state: MockState, cache_length: int, width: int) -> MockState:
    self.log.append(("grow", (cache_length, width)))
    out = np.pad(state.out, ((0, 0), (0, width - state.out.shape[1])))
    return dataclasses.replace(state, out=out, cache_length=cache_length)

  def take_slots(self, state: MockState, rows: np.ndarray, valid: np.ndarray) -> MockState:
    self.log.append(("take", len(rows)))
    pick = lambda a: a[rows].copy()
    return dataclasses.replace(
      state,
      start=pick(state.start),
      out=pick(state.out),
      count=pick(state.count),
      done=pick(state.done),
      live=pick(state.live) & valid,
      max_new=pick(state.max_new),
    )

  def stop_slots(self, state: MockState, stop: np.ndarray) -> MockState:
    return dataclasses.replace(state, done=state.done | stop)

  def programs_ahead(self, state: MockState, tail_slots: int) -> list:
    return []
