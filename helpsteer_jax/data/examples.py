"""The examples training data is built into, and the error and counting types the builders share.

Every reader turns raw rows into one of three example kinds, each keeping the chat messages (not
token ids) so the same examples serve any tokenizer and chat template:
- `ChatExample`: SFT (Feedback, Edit, attribute-conditioned SFT): messages plus which assistant
  turns carry loss.
- `PairExample`: Bradley-Terry reward models: a chosen and a rejected conversation, each ending
  with the assistant turn being scored, plus the preference magnitude `|label|`.
- `RegressionExample`: attribute reward models: a conversation ending with the scored response,
  plus one target per output with `MISSING_LABEL` where the row has no value.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

from helpsteer_jax.formats.messages import Message, assistant  # noqa: F401 (the row builders take it from here)

MISSING_LABEL = -100.0  # a regression target the row does not have; masked out of the loss

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
  """Bad input data; the message names the file and row at fault and what was expected."""


class RowError(ValueError):
  """Raised by a builder for one malformed row; the reader prefixes the row's location."""


@dataclasses.dataclass(frozen=True)
class ChatExample:
  """A conversation for SFT. `loss_turns` are indices into `messages` of assistant turns whose
  tokens (and end-of-turn token) the model learns to predict; every other token is context."""

  messages: tuple[Message, ...]
  loss_turns: tuple[int, ...]
  source: str = ""  # "file:line" or "dataset[row i]", for error messages

  def __post_init__(self):
    for i in self.loss_turns:
      if not 0 <= i < len(self.messages) or self.messages[i]["role"] != "assistant":
        raise ValueError(f"{self.source}: loss turn {i} is not an assistant message")
    if list(self.loss_turns) != sorted(set(self.loss_turns)):
      raise ValueError(f"{self.source}: loss turns {self.loss_turns} must be increasing and distinct")


# Kinds of preference pair, kept in the batch so metrics can be split by kind (the Edit RM mixes
# "followed the feedback better" pairs with "edited at all" pairs).
PAIR_KINDS = ("preference", "bad_edit", "no_edit")


@dataclasses.dataclass(frozen=True)
class PairExample:
  """Two conversations that share a prompt and differ in the final assistant turn."""

  chosen: tuple[Message, ...]
  rejected: tuple[Message, ...]
  label_magnitude: float = 1.0  # |preference label|: the scale of the scaled and margin BT losses
  kind: str = "preference"  # one of PAIR_KINDS
  source: str = ""

  def __post_init__(self):
    if self.kind not in PAIR_KINDS:
      raise ValueError(f"{self.source}: pair kind {self.kind!r}; expected one of {PAIR_KINDS}")
    for side, messages in (("chosen", self.chosen), ("rejected", self.rejected)):
      if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"{self.source}: the {side} conversation must end with an assistant turn")


@dataclasses.dataclass(frozen=True)
class RegressionExample:
  """A conversation ending with the scored response and one target per model output."""

  messages: tuple[Message, ...]
  targets: tuple[float, ...]  # MISSING_LABEL where the row has no value
  source: str = ""

  def __post_init__(self):
    if not self.messages or self.messages[-1]["role"] != "assistant":
      raise ValueError(f"{self.source}: a regression example must end with an assistant turn")


Example = Union[ChatExample, PairExample, RegressionExample]


class BuildStats:
  """Counts of what reading and building did (rows read, skipped by reason, examples made, ties
  dropped, ...), so a run can report exactly what part of the data it trained on."""

  MAX_SAMPLES = 5  # skipped-row messages kept verbatim for the report

  def __init__(self):
    self.counts: collections.Counter[str] = collections.Counter()
    self.samples: list[str] = []

  def add(self, key: str, n: int = 1) -> None:
    self.counts[key] += n

  def skip(self, reason: str, message: str) -> None:
    """Counts a skipped row under `skipped/<reason>` and keeps the first few messages."""
    self.counts["rows_skipped"] += 1
    self.counts[f"skipped/{reason}"] += 1
    if len(self.samples) < self.MAX_SAMPLES:
      self.samples.append(message)

  def merge(self, other: "BuildStats") -> None:
    self.counts.update(other.counts)
    self.samples.extend(other.samples[: max(0, self.MAX_SAMPLES - len(self.samples))])

  def as_dict(self) -> dict[str, int]:
    return dict(sorted(self.counts.items()))

  def summary(self) -> str:
    parts = [f"{k}={v}" for k, v in sorted(self.counts.items())]
    text = ", ".join(parts) if parts else "nothing counted"
    if self.samples:
      text += "; first skipped: " + " | ".join(self.samples)
    return text


# -- raw-row field checks ------------------------------------------------------------------------
# Builders read rows through these so a malformed row fails with the field named and the type
# expected, instead of a KeyError or a silently wrong example.


def field(row: Mapping[str, Any], key: str) -> Any:
  if not isinstance(row, Mapping):
    raise RowError(f"expected a JSON object (a mapping of field names), got {type(row).__name__}")
  if key not in row:
    raise RowError(f"missing field {key!r} (fields present: {sorted(row)})")
  return row[key]


def text_field(row: Mapping[str, Any], key: str, *, nonempty: bool = True) -> str:
  value = field(row, key)
  if not isinstance(value, str):
    raise RowError(f"field {key!r} must be a string, got {type(value).__name__}")
  if nonempty and not value.strip():
    raise RowError(f"field {key!r} is empty; expected text")
  return value


def text_list_field(row: Mapping[str, Any], key: str, *, min_items: int = 1) -> list[str]:
  value = field(row, key)
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise RowError(f"field {key!r} must be a list of strings, got {_describe(value)}")
  if len(value) < min_items:
    raise RowError(f"field {key!r} has {len(value)} items; expected at least {min_items}")
  return value


def int_field(row: Mapping[str, Any], key: str, low: int, high: int) -> int:
  value = field(row, key)
  if (
    isinstance(value, bool)
    or not isinstance(value, (int, float))
    or not math.isfinite(value)
    or float(value) != int(value)
  ):
    raise RowError(f"field {key!r} must be an integer in [{low}, {high}], got {value!r}")
  if not low <= int(value) <= high:
    raise RowError(f"field {key!r} = {value} is outside [{low}, {high}]")
  return int(value)


def messages_field(row: Mapping[str, Any], key: str, *, last_role: str = "user") -> list[Message]:
  """A list of `{"role", "content"}` messages (roles system/user/assistant) ending on `last_role`."""
  value = field(row, key)
  if not isinstance(value, list) or not value:
    raise RowError(f"field {key!r} must be a non-empty list of {{'role', 'content'}} messages, got {_describe(value)}")
  messages = []
  for i, m in enumerate(value):
    if not (isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
      raise RowError(f"field {key!r}[{i}] must be {{'role': str, 'content': str}}, got {_describe(m)}")
    if m["role"] not in ROLES:
      raise RowError(f"field {key!r}[{i}] has role {m['role']!r}; expected one of {ROLES}")
    messages.append({"role": m["role"], "content": m["content"]})
  if messages[-1]["role"] != last_role:
    raise RowError(f"field {key!r} ends with a {messages[-1]['role']!r} turn; expected a {last_role!r} turn")
  return messages


def _describe(value: Any) -> str:
  text = repr(value)
  return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def freeze(messages: Sequence[Message]) -> tuple[Message, ...]:
  """Copies messages into a tuple of fresh dicts (examples never share mutable rows)."""
  return tuple({"role": m["role"], "content": m["content"]} for m in messages)
