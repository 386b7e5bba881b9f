"""Builders from nvidia/HelpSteer and nvidia/HelpSteer2 rows: attribute regression targets,
attribute-conditioned SFT (SteerLM), and HelpSteer2-Preference pairs.

Rows hold a `prompt` string, a `response` and Likert 0-4 attributes. A regression model predicts
a fixed list of outputs: the 9 SteerLM slots (HelpSteer's 5 attributes fill the last 5, the other
4 are `MISSING_LABEL` and masked out of the loss) or HelpSteer2's 5. Attribute-conditioned SFT puts
the attribute string in the system turn, where it is conditioning (no loss), and trains on the
response; at inference the user steers by choosing that string.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from helpsteer_jax.data.examples import (
  MISSING_LABEL,
  BuildStats,
  ChatExample,
  Message,
  PairExample,
  RegressionExample,
  RowError,
  assistant,
  freeze,
  text_field,
)
from helpsteer_jax.data.helpsteer3 import preference_pair

# The 9 SteerLM attribute slots, in the order of the regression head's outputs.
STEERLM_ATTRIBUTES = (
  "quality",
  "toxicity",
  "humor",
  "creativity",
  "helpfulness",
  "correctness",
  "coherence",
  "complexity",
  "verbosity",
)
# The 5 attributes HelpSteer and HelpSteer2 annotate.
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ATTRIBUTE_RANGE = (0, 4)

# HelpSteer2 joins the turns of a multi-turn prompt with these markers (see the data card).
_TURN_MARKER = re.compile(r"\n<extra_id_1>(Assistant|User)\n")


def parse_prompt(prompt: str) -> list[Message]:
  """A HelpSteer/HelpSteer2 `prompt` string -> user/assistant messages ending on a user turn.

  `"q1\\n<extra_id_1>Assistant\\na1\\n<extra_id_1>User\\nq2"` -> user q1, assistant a1, user q2.
  """
  parts = _TURN_MARKER.split(prompt)
  messages = [{"role": "user", "content": parts[0]}]
  expected = "Assistant"
  for i in range(1, len(parts), 2):
    marker, content = parts[i], parts[i + 1]
    if marker != expected:
      raise RowError(
        f"field 'prompt': turn {len(messages) + 1} is marked {marker!r}; expected "
        f"{expected!r} (turns must alternate user/assistant)"
      )
    messages.append({"role": "user" if marker == "User" else "assistant", "content": content})
    expected = "User" if marker == "Assistant" else "Assistant"
  if messages[-1]["role"] != "user":
    raise RowError("field 'prompt' ends with an assistant turn; expected the last turn to be the user's")
  if not messages[0]["content"].strip():
    raise RowError("field 'prompt' has an empty first user turn")
  return messages


def attribute_values(row: Mapping[str, Any], names: Sequence[str]) -> tuple[float, ...]:
  """One value per name: the row's 0-4 label, or MISSING_LABEL when absent, null, NaN or -100."""
  values = []
  for name in names:
    value = row.get(name) if isinstance(row, Mapping) else None
    if value is None or value == MISSING_LABEL or (isinstance(value, float) and math.isnan(value)):
      values.append(MISSING_LABEL)
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise RowError(f"field {name!r} must be a number in {list(ATTRIBUTE_RANGE)}, got {value!r}")
    low, high = ATTRIBUTE_RANGE
    if not low <= float(value) <= high:
      raise RowError(f"field {name!r} = {value} is outside [{low}, {high}]")
    values.append(float(value))
  return tuple(values)


def attribute_string(values: Mapping[str, float]) -> str:
  """`{"helpfulness": 4, "verbosity": 2}` -> `"helpfulness:4,verbosity:2"` (SteerLM's format;
  integral values are written without a decimal point, missing ones are left out)."""
  parts = []
  for name, value in values.items():
    if value is None or value == MISSING_LABEL:
      continue
    number = int(value) if float(value).is_integer() else round(float(value), 2)
    parts.append(f"{name}:{number}")
  return ",".join(parts)


def conditioning_message(values: Mapping[str, float]) -> Message:
  """The system turn that conditions attribute-conditioned SFT and steers the model at inference."""
  return {"role": "system", "content": attribute_string(values)}


@dataclasses.dataclass(frozen=True)
class AttributeRegressionBuilder:
  """Regression targets for the attribute reward model: (prompt, response) -> `attributes`.

  A row with none of the attributes is skipped as malformed (it would add no gradient).
  `labelled` (empty = all) keeps only those outputs' labels and masks the rest, e.g. HelpSteer2-
  Preference's helpfulness-only first stage (NeMo-Aligner's `--only_helpfulness`) on 9 outputs.
  """

  attributes: tuple[str, ...] = HELPSTEER2_ATTRIBUTES
  labelled: tuple[str, ...] = ()

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[RegressionExample]:
    messages = parse_prompt(text_field(row, "prompt")) + [assistant(text_field(row, "response"))]
    targets = attribute_values(row, self.attributes)
    if self.labelled:
      targets = tuple(t if name in self.labelled else MISSING_LABEL for name, t in zip(self.attributes, targets))
    if all(t == MISSING_LABEL for t in targets):
      raise RowError(f"the row has none of the attributes {list(self.attributes)}")
    stats.add("attribute_labels_missing", sum(t == MISSING_LABEL for t in targets))
    return [RegressionExample(freeze(messages), targets, where)]


@dataclasses.dataclass(frozen=True)
class AttributeConditionedSFTBuilder:
  """SteerLM attribute-conditioned SFT: system = attribute string (no loss), then the prompt's
  turns (no loss), then the response (the loss turn). `attributes` picks and orders the string's
  attributes; those the row lacks are left out of it.
  """

  attributes: tuple[str, ...] = HELPSTEER2_ATTRIBUTES

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[ChatExample]:
    prompt = parse_prompt(text_field(row, "prompt"))
    response = text_field(row, "response")
    values = dict(zip(self.attributes, attribute_values(row, self.attributes)))
    if all(v == MISSING_LABEL for v in values.values()):
      raise RowError(f"the row has none of the attributes {list(self.attributes)}")
    messages = freeze([conditioning_message(values)] + prompt + [assistant(response)])
    return [ChatExample(messages, (len(messages) - 1,), where)]


@dataclasses.dataclass(frozen=True)
class HelpSteer2PreferenceBuilder:
  """Bradley-Terry pairs from HelpSteer2-Preference (`data_dir="preference"`): `prompt` string,
  `response_1`/`response_2`, `preference_strength` -3..3 (negative = response 1 better).
  The hub serves train and validation as one `train` split; `split` keeps the rows whose `split`
  field matches (empty = all).
  """

  split: str = "train"
  min_magnitude: int = 1

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[PairExample]:
    if self.split:
      row_split = text_field(row, "split")
      if row_split != self.split:
        stats.add(f"rows_in_split/{row_split}")
        return []
    context = parse_prompt(text_field(row, "prompt"))
    return preference_pair(
      context, row, where, stats, "preference_strength", ("response_1", "response_2"), self.min_magnitude
    )
