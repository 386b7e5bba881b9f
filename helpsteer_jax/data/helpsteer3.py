"""Builders from nvidia/HelpSteer3 rows to training examples (one builder per subset).

The Feedback and Edit models are trained on exactly the messages the inference-time search sends
them (`formats/prompts.py`: `feedback_request`, `edit_request`, in the builder's `prompt_format`),
so a trained model and the search agree on the layout. The Edit RM scores (edit prompt, edited
response) the same way, since it judges the Edit model's outputs during RLOO.

Each builder is called per row as `builder(row, where, stats)` and returns a list of examples;
a malformed row raises `RowError` (the reader adds the row's location and either raises or skips
and counts it).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

from helpsteer_jax.data.examples import (
  BuildStats,
  ChatExample,
  Message,
  PairExample,
  RowError,
  assistant,
  freeze,
  int_field,
  messages_field,
  text_field,
  text_list_field,
)
from helpsteer_jax.formats import prompts
from helpsteer_jax.formats.prompts import HELPFULNESS_LEVELS

# Every HelpSteer3 feedback opens with this sentence (the card's annotation guideline).
FEEDBACK_OPENING = re.compile(r"\s*The response is (%s) helpful" % "|".join(HELPFULNESS_LEVELS))


def helpfulness_level(feedback: str) -> Optional[str]:
  """The level named by a feedback's opening sentence ("not" ... "perfectly"), or None."""
  match = FEEDBACK_OPENING.match(feedback)
  return match.group(1) if match else None


def _sft(messages: Sequence[Message], target: str, where: str) -> ChatExample:
  """A single-target SFT example: the prompt messages plus the assistant target (the loss turn)."""
  full = freeze(list(messages) + [assistant(target)])
  return ChatExample(messages=full, loss_turns=(len(full) - 1,), source=where)


@dataclasses.dataclass(frozen=True)
class FeedbackBuilder:
  """Feedback-model SFT: (conversation, response) -> one feedback text.

  A row has two responses with up to 3 feedbacks each; every (response, feedback) is one example.
  With `require_opening`, feedback that does not open with "The response is {level} helpful" is
  left out and counted (`feedback_without_opening`): the search parses that level, so the model
  must always write it. `prompt_format` is the Feedback role's layout in the search (`plain`, or
  `nemotron` for the layout of NVIDIA's released Feedback model).
  """

  require_opening: bool = True
  prompt_format: str = "plain"

  def __post_init__(self):
    prompts.check_prompt_format(self.prompt_format, "feedback")

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[ChatExample]:
    context = messages_field(row, "context")
    examples = []
    for side in ("1", "2"):
      response = text_field(row, f"response{side}")
      feedbacks = text_list_field(row, f"feedback{side}", min_items=0)
      for i, feedback in enumerate(feedbacks):
        if not feedback.strip():
          stats.add("feedback_empty")
          continue
        if self.require_opening and helpfulness_level(feedback) is None:
          stats.add("feedback_without_opening")
          continue
        request = prompts.feedback_request(context, response, self.prompt_format)
        examples.append(_sft(request, feedback, f"{where} response{side} feedback {i}"))
    return examples


@dataclasses.dataclass(frozen=True)
class EditBuilder:
  """Edit-model SFT: (conversation, original response, feedback list) -> edited response.

  One example per ordering of the feedback list (3 items -> 6 examples), so the model does not
  learn to weight feedback by its position. `max_permutations` (0 = all) keeps the first orderings
  in `itertools.permutations` order, the given order first.
  """

  max_permutations: int = 0
  prompt_format: str = "plain"

  def __post_init__(self):
    prompts.check_prompt_format(self.prompt_format, "edit")

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[ChatExample]:
    context = messages_field(row, "context")
    original = text_field(row, "original_response")
    feedback = _feedback_list(row)
    edited = text_field(row, "edited_response")
    examples = []
    for k, order in enumerate(feedback_orders(feedback, self.max_permutations)):
      request = prompts.edit_request(context, original, order, self.prompt_format)
      examples.append(_sft(request, edited, f"{where} permutation {k}"))
    return examples


def feedback_orders(feedback: Sequence[str], max_permutations: int = 0) -> list[tuple[str, ...]]:
  """Every ordering of `feedback` (n! of them), or the first `max_permutations` when > 0."""
  orders: Iterator[tuple[str, ...]] = itertools.permutations(feedback)
  if max_permutations > 0:
    orders = itertools.islice(orders, max_permutations)
  return list(orders)


def _feedback_list(row: Mapping[str, Any]) -> list[str]:
  feedback = text_list_field(row, "feedback")
  if any(not f.strip() for f in feedback):
    raise RowError("field 'feedback' has an empty item; expected feedback text in every item")
  return feedback


@dataclasses.dataclass(frozen=True)
class EditQualityBuilder:
  """Edit RM pairs from an Edit-Quality row, both on the Edit model's prompt:
  - (bad edit, good edit): teaches following the feedback (kind `bad_edit`);
  - (original = no edit, good edit): teaches editing at all (kind `no_edit`), against the SFT
    Edit model's habit of copying the original.
  `permute_feedback` adds both pairs for every ordering of the feedback list.
  """

  include_bad_edit: bool = True
  include_no_edit: bool = True
  permute_feedback: bool = False
  prompt_format: str = "plain"  # the Edit role's layout

  def __post_init__(self):
    prompts.check_prompt_format(self.prompt_format, "edit")

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[PairExample]:
    context = messages_field(row, "context")
    original = text_field(row, "original_response")
    feedback = _feedback_list(row)
    good = text_field(row, "good_edited_response")
    bad = text_field(row, "bad_edited_response")
    orders = feedback_orders(feedback) if self.permute_feedback else [tuple(feedback)]
    pairs = []
    for k, order in enumerate(orders):
      prompt = prompts.edit_request(context, original, order, self.prompt_format)
      chosen = freeze(prompt + [assistant(good)])
      suffix = f" permutation {k}" if self.permute_feedback else ""
      if self.include_bad_edit:
        pairs.append(
          PairExample(chosen, freeze(prompt + [assistant(bad)]), 1.0, "bad_edit", f"{where}{suffix} bad_edit")
        )
      if self.include_no_edit:
        if original.strip() == good.strip():
          stats.add("no_edit_pair_identical")  # nothing to learn from identical sides
        else:
          pairs.append(
            PairExample(chosen, freeze(prompt + [assistant(original)]), 1.0, "no_edit", f"{where}{suffix} no_edit")
          )
    return pairs


@dataclasses.dataclass(frozen=True)
class PreferenceBuilder:
  """Bradley-Terry pairs from Preference rows: `overall_preference` in -3..3, negative = response1
  better. The sign picks chosen/rejected, `|label|` is kept as `label_magnitude` (scaled and margin
  losses), and 0 (a tie) carries no direction and is dropped (counted as `preference_ties`).
  `min_magnitude` drops weaker preferences too (counted as `preference_below_min`).
  """

  min_magnitude: int = 1
  label_key: str = "overall_preference"
  response_keys: tuple[str, str] = ("response1", "response2")
  context_key: str = "context"

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[PairExample]:
    context = messages_field(row, self.context_key)
    return preference_pair(context, row, where, stats, self.label_key, self.response_keys, self.min_magnitude)


def preference_pair(
  context: Sequence[Message],
  row: Mapping[str, Any],
  where: str,
  stats: BuildStats,
  label_key: str,
  response_keys: tuple[str, str],
  min_magnitude: int = 1,
) -> list[PairExample]:
  """The (chosen, rejected) pair of a row with two responses and a signed -3..3 preference."""
  first = text_field(row, response_keys[0])
  second = text_field(row, response_keys[1])
  label = int_field(row, label_key, -3, 3)
  if label == 0:
    stats.add("preference_ties")
    return []
  if abs(label) < max(1, min_magnitude):
    stats.add("preference_below_min")
    return []
  chosen, rejected = (first, second) if label < 0 else (second, first)
  return [
    PairExample(
      freeze(list(context) + [assistant(chosen)]),
      freeze(list(context) + [assistant(rejected)]),
      float(abs(label)),
      "preference",
      where,
    )
  ]
