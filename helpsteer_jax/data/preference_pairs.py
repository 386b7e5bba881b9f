"""Preference files in TRL's layout: `{"prompt", "chosen", "rejected"}` rows -> Bradley-Terry pairs.

The two forms TRL's reward trainer reads, per row:
- standard: `prompt`, `chosen` and `rejected` are strings (one user turn, one answer each);
- conversational: `prompt` is a list of messages ending on a user turn, `chosen` and `rejected`
  are lists of the assistant turn(s) that follow.
Without `prompt` (TRL's implicit-prompt form), `chosen` and `rejected` are whole conversations
that share every turn but the last. An optional `margin` (or `label_magnitude`) >= 0 becomes the
pair's magnitude for the margin and scaled losses; it defaults to 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from helpsteer_jax.data.examples import (
  BuildStats,
  Message,
  PairExample,
  RowError,
  assistant,
  field,
  freeze,
  messages_field,
)
from helpsteer_jax.formats.messages import user


def _turns(row: Mapping[str, Any], key: str, last_role: str) -> list[Message]:
  value = field(row, key)
  if isinstance(value, str):
    if not value.strip():
      raise RowError(f"field {key!r} is empty")
    return [user(value) if last_role == "user" else assistant(value)]
  return messages_field(row, key, last_role=last_role)


def _magnitude(row: Mapping[str, Any]) -> float:
  for key in ("margin", "label_magnitude"):
    if key in row:
      value = row[key]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RowError(f"field {key!r} must be a finite number >= 0, got {value!r}")
      return float(value)
  return 1.0


@dataclasses.dataclass(frozen=True)
class PreferencePairsBuilder:
  """One (chosen, rejected) pair per row; identical sides are dropped (counted `identical_pair`)."""

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[PairExample]:
    if "prompt" in row:
      prompt = _turns(row, "prompt", "user")
      chosen = prompt + _turns(row, "chosen", "assistant")
      rejected = prompt + _turns(row, "rejected", "assistant")
    else:
      chosen = messages_field(row, "chosen", last_role="assistant")
      rejected = messages_field(row, "rejected", last_role="assistant")
      if chosen[:-1] != rejected[:-1]:
        raise RowError(
          "fields 'chosen' and 'rejected' (no 'prompt') must share every turn but the "
          "last; give the shared turns as 'prompt' otherwise"
        )
    if chosen == rejected:
      stats.add("identical_pair")
      return []
    return [PairExample(freeze(chosen), freeze(rejected), _magnitude(row), "preference", where)]
