"""Static sampling settings and prompt shaping, shared by the engine and the static sampler.

`SamplingSettings` is hashable: it selects compiled programs. Lengths round up to buckets so that a
new length reuses an existing compilation: powers of two (`bucket`), and for prompts that one
prefill computes in full, steps of 64 past 128 (`prompt_bucket`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  max_new_tokens: int = 64
  temperature: float = 0.0
  top_k: Optional[int] = None
  top_p: Optional[float] = None
  stop_token_ids: tuple[int, ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}; expected at least 1")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature}; expected >= 0")
    if self.top_k is not None and self.top_k < 1:
      raise ValueError(f"top_k={self.top_k}; expected >= 1 or None")
    if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p}; expected in (0, 1] or None")


def bucket(length: int, minimum: int = 16) -> int:
  """The smallest power of two >= length (at least `minimum`): the set of compiled shapes stays small."""
  size = minimum
  while size < length:
    size *= 2
  return size


# Past twice this, a prefilled prompt pads to a multiple of it rather than to a power of two.
PROMPT_GRANULARITY = 64


def prompt_bucket(length: int, minimum: int = 16) -> int:
  """The padded length of a prompt that is computed in one pass (the static sampler's prefill, a
  reward model's scoring batch): `bucket(length)` up to 128, then the next multiple of 64.
  Compute grows with the padded length, and prompts of hundreds of tokens padded to a power of two
  grow by up to 2x; a compilation costs a fraction of a second on CPU, so the extra programs are
  cheaper than the padding. (The decode engine prefills in fixed chunks instead and compiles one
  program for every length: sampling/chunked_prefill.py.)"""
  if length <= 2 * PROMPT_GRANULARITY:
    return bucket(length, minimum)
  return -(-length // PROMPT_GRANULARITY) * PROMPT_GRANULARITY


def keep_ends(ids: Sequence[int], max_tokens: int) -> list[int]:
  """`ids` cut to at most `max_tokens`: the first token (BOS) and the last `max_tokens` - 1, where a
  request and its answer are. `max_tokens` <= 0 keeps every token."""
  ids = list(ids)
  if max_tokens <= 0 or len(ids) <= max_tokens:
    return ids
  return ids[:1] + ids[len(ids) - max_tokens + 1 :]


def left_pad(prompts: Sequence[Sequence[int]], length: int, batch: int, pad_id: int):
  """-> ids [batch, length] int32, mask [batch, length] bool; filler rows are all padding."""
  ids = np.full((batch, length), pad_id, np.int32)
  mask = np.zeros((batch, length), bool)
  for row, prompt in enumerate(prompts):
    if len(prompt):
      ids[row, length - len(prompt) :] = prompt
      mask[row, length - len(prompt) :] = True
  return ids, mask
