"""Which sampled feedbacks are "effective", as named, configurable rules.

The papers keep feedback that criticises constructively; the exact rule is unpublished. The
default rule here, `constructive`, drops feedback that calls the response perfectly helpful and
ranks the rest by how many concrete change requests it makes (then by lower helpfulness).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Optional

from helpsteer_jax.formats.prompts import HELPFULNESS_LEVELS

_LEVEL = re.compile(r"the response is\s+(not|slightly|partially|mostly|perfectly)\s+helpful", re.I)
# Phrases that ask for a concrete change; each sentence counts once.
_REQUEST = re.compile(
  r"\b(should|could|would be (better|improved|clearer)|needs? to|must|missing|lacks?|omits?|"
  r"fails? to|does not|doesn't|incorrect|inaccurate|wrong|error|instead|consider|add|remove|"
  r"clarify|include|explain|mention|avoid|unnecessary|too (long|short|verbose|vague))\b",
  re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def parse_helpfulness(feedback: str) -> Optional[int]:
  """0 (not helpful) .. 4 (perfectly helpful), from the opening phrase; None if absent."""
  match = _LEVEL.search(feedback)
  return None if match is None else HELPFULNESS_LEVELS.index(match.group(1).lower())


def count_change_requests(feedback: str) -> int:
  return sum(1 for sentence in _SENTENCE.split(feedback.strip()) if _REQUEST.search(sentence))


@dataclasses.dataclass(frozen=True)
class FeedbackInfo:
  helpfulness: Optional[int]
  change_requests: int


def describe(feedback: str) -> FeedbackInfo:
  return FeedbackInfo(parse_helpfulness(feedback), count_change_requests(feedback))


# A rule maps the feedback texts of one draft and a cap to the indices kept, best first.
FeedbackRule = Callable[[Sequence[str], int], list[int]]


def _ranked(feedbacks: Sequence[str], keep: Callable[[FeedbackInfo, str], bool], cap: int) -> list[int]:
  infos = [describe(f) for f in feedbacks]
  kept = [i for i, (info, text) in enumerate(zip(infos, feedbacks)) if keep(info, text)]
  kept.sort(
    key=lambda i: (-infos[i].change_requests, infos[i].helpfulness if infos[i].helpfulness is not None else 5, i)
  )
  return kept[:cap]


def constructive(feedbacks: Sequence[str], cap: int) -> list[int]:
  """Drop empty and "perfectly helpful" feedback; most change requests first."""
  return _ranked(feedbacks, lambda info, text: bool(text.strip()) and info.helpfulness != 4, cap)


def constructive_strict(feedbacks: Sequence[str], cap: int) -> list[int]:
  """As `constructive`, and also drop feedback without the helpfulness opening or any request."""
  return _ranked(
    feedbacks,
    lambda info, text: info.helpfulness is not None and info.helpfulness < 4 and info.change_requests > 0,
    cap,
  )


def keep_all(feedbacks: Sequence[str], cap: int) -> list[int]:
  """No filtering: the first `cap` non-empty feedbacks in sampling order."""
  return [i for i, text in enumerate(feedbacks) if text.strip()][:cap]


def opens_perfectly_helpful(opening: str) -> bool:
  """Whether a feedback's text so far already calls the response perfectly helpful: the first
  helpfulness phrase of the whole feedback is then this one (a later one cannot start inside it),
  so `constructive` and `constructive_strict` drop the feedback however it goes on."""
  return parse_helpfulness(opening) == 4


RULES: dict[str, FeedbackRule] = {
  "constructive": constructive,
  "constructive_strict": constructive_strict,
  "keep_all": keep_all,
}


# For each rule that can reject a feedback from its opening alone: the test on the opening. A
# feedback that fails it is dropped whatever follows, so its decoding can stop there.
EARLY_REJECTS: dict[str, Callable[[str], bool]] = {
  "constructive": opens_perfectly_helpful,
  "constructive_strict": opens_perfectly_helpful,
}


def get_rule(name: str) -> FeedbackRule:
  if name not in RULES:
    raise ValueError(f"unknown feedback rule {name!r}; known: {sorted(RULES)}")
  return RULES[name]
