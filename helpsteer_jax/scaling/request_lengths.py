"""The longest request each stage of the search can send, checked against its model's context
before any generation.

A prompt that fits the policy can still overflow a later stage: the Feedback request carries the
draft, and the Edit request carries the draft and a whole feedback group. Their worst case is
known before anything is generated: a draft of `draft.max_new_tokens` tokens and feedback of
`feedback.max_new_tokens` tokens per item of the largest group, rendered with the role's own
`prompt_format` and chat template and counted with its tokenizer, plus the stage's own
`max_new_tokens`. Checking this first turns an overflow hours into a run into an error at start-up
that names the prompt, the stage and the numbers. A stage played by a remote role
(scaling/remote_roles.py) is not checked here: its server holds the tokenizer and refuses a request
over its context itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.sampling.generate import encode_conversations


@dataclasses.dataclass(frozen=True)
class RoleLimits:
  """What the check needs of a role: its tokenizer, request layout and context length."""

  name: str
  tokenizer: Any  # None: a remote role, not checked
  prompt_format: str
  context: int  # the model's max_position_embeddings


@dataclasses.dataclass(frozen=True)
class StageRequest:
  """The longest request of one stage for one prompt."""

  stage: str  # draft | feedback | edit
  role: RoleLimits
  prompt_tokens: int
  max_new_tokens: int
  carries: str  # what the request holds besides the prompt, for the error message

  @property
  def total(self) -> int:
    return self.prompt_tokens + self.max_new_tokens


def placeholder(num_tokens: int) -> str:
  """A stand-in for a generation of `num_tokens` tokens (one short word each, which common BPE
  vocabularies keep as one token)."""
  return " ".join(["x"] * num_tokens)


def _count(role: RoleLimits, conversation) -> int:
  if role.tokenizer is None:  # a remote role: dropped from the check
    return 0
  return len(encode_conversations(role.tokenizer, [conversation])[0])


def longest_requests(
  item: PromptItem, settings: Any, policy: RoleLimits, feedback: RoleLimits, edit: RoleLimits
) -> list[StageRequest]:
  """The worst-case request of each stage `settings.mode` runs for `item` (`settings` is the
  search's `SearchSettings`)."""
  conv = item.conversation
  draft_tokens = settings.draft.max_new_tokens
  out = [StageRequest("draft", policy, _count(policy, conv), draft_tokens, "")]
  draft = placeholder(draft_tokens)
  if settings.mode == "feedback_edit":
    request = templates.feedback_request(conv, draft, feedback.prompt_format)
    out.append(
      StageRequest(
        "feedback",
        feedback,
        _count(feedback, request),
        settings.feedback.max_new_tokens,
        f"a draft of {draft_tokens} tokens",
      )
    )
    group = min(settings.feedback_group_size, settings.num_feedbacks)
    items = [placeholder(settings.feedback.max_new_tokens)] * group
    request = templates.edit_request(conv, draft, items, edit.prompt_format)
    out.append(
      StageRequest(
        "edit",
        edit,
        _count(edit, request),
        settings.edit.max_new_tokens,
        f"a draft of {draft_tokens} tokens and {group} feedback items of {settings.feedback.max_new_tokens} tokens",
      )
    )
  elif settings.mode == "edit_without_feedback":
    request = templates.revision_request(conv, draft, edit.prompt_format)
    out.append(
      StageRequest(
        "edit", edit, _count(edit, request), settings.edit.max_new_tokens, f"a draft of {draft_tokens} tokens"
      )
    )
  return [r for r in out if r.role.tokenizer is not None]


def check_request_lengths(
  items: Sequence[PromptItem], settings: Any, policy: RoleLimits, feedback: RoleLimits, edit: RoleLimits
) -> dict[str, int]:
  """Raises ValueError for the first prompt whose longest request in any stage, with that stage's
  `max_new_tokens`, exceeds the context of the model that answers it; else returns the longest
  request (prompt and new tokens) of each stage (draft, feedback, edit) over `items`."""
  longest: dict[str, int] = {}
  for item in items:
    for r in longest_requests(item, settings, policy, feedback, edit):
      longest[r.stage] = max(longest.get(r.stage, 0), r.total)
      if r.total <= r.role.context:
        continue
      if r.stage == "draft":
        raise ValueError(
          f"prompt {item.id!r} has {r.prompt_tokens} tokens; with max_new_tokens={r.max_new_tokens} "
          f"it exceeds the {r.role.name} model's context of {r.role.context}"
        )
      raise ValueError(
        f"prompt {item.id!r}: its {r.stage} request, with {r.carries}, has up to {r.prompt_tokens} "
        f"tokens; with search.{r.stage}.max_new_tokens={r.max_new_tokens} that is {r.total}, over the "
        f"{r.role.name} model's context of {r.role.context}; shorten the prompt or lower "
        "search.draft.max_new_tokens / search.feedback.max_new_tokens"
      )
  return longest
