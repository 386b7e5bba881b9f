"""Every model-facing prompt of the search and its training data, by role and `prompt_format`.

    prompts.feedback_request(conversation, response, prompt_format="nemotron")

Formats (`PROMPT_FORMATS`):
  plain     the project's own one-turn layouts (`formats/plain.py`)
  nemotron  the layouts of NVIDIA's released Feedback and Select models (`formats/nemotron.py`)

The training-data builders (Feedback and Edit SFT, the Edit RM, the RLOO prompts) and the search
call these same functions, so a model trained here sees exactly what the search sends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from helpsteer_jax.formats import nemotron, plain
from helpsteer_jax.formats.messages import Conversation, Message
from helpsteer_jax.formats.plain import HELPFULNESS_LEVELS, JUDGE_ANSWER_PREFIX

__all__ = [
  "PROMPT_FORMATS",
  "HELPFULNESS_LEVELS",
  "JUDGE_ANSWER_PREFIX",
  "check_prompt_format",
  "feedback_request",
  "edit_request",
  "revision_request",
  "judge_request",
  "select_request",
]

_LAYOUTS: dict[str, ModuleType] = {"plain": plain, "nemotron": nemotron}
PROMPT_FORMATS = tuple(_LAYOUTS)
# Roles whose `nemotron` layout is published (the Edit model's is not).
_NEMOTRON_ROLES = ("feedback", "select", "judge")


def check_prompt_format(prompt_format: str, role: str = "") -> str:
  """`prompt_format` itself when it names a layout (for `role` when given), else a ValueError:
  configs call this at build time so a bad name fails before any model loads."""
  if prompt_format not in _LAYOUTS:
    where = f" for the {role} role" if role else ""
    raise ValueError(f"prompt_format={prompt_format!r}{where}; expected one of {PROMPT_FORMATS}")
  if prompt_format == "nemotron" and role and role not in _NEMOTRON_ROLES:
    raise ValueError(f"{role} role: {nemotron.EDIT_UNPUBLISHED}")
  return prompt_format


def _layout(prompt_format: str) -> ModuleType:
  return _LAYOUTS[check_prompt_format(prompt_format)]


def feedback_request(conversation: Conversation, response: str, prompt_format: str = "plain") -> list[Message]:
  """The Feedback role's request on `response`, the next assistant turn of `conversation`."""
  return _layout(prompt_format).feedback_request(conversation, response)


def edit_request(
  conversation: Conversation, response: str, feedback: Sequence[str], prompt_format: str = "plain"
) -> list[Message]:
  """The Edit role's request: `response` rewritten to act on every item of `feedback`."""
  return _layout(prompt_format).edit_request(conversation, response, feedback)


def revision_request(conversation: Conversation, response: str, prompt_format: str = "plain") -> list[Message]:
  """The "edit without feedback" ablation's request."""
  return _layout(prompt_format).revision_request(conversation, response)


def judge_request(conversation: Conversation, response: str, prompt_format: str = "plain") -> list[Message]:
  """The generative judge's request; its last message is the pre-filled assistant answer
  (`JUDGE_ANSWER_PREFIX`), so it renders with `continue_final_message=True`."""
  return _layout(prompt_format).judge_request(conversation, response)


def select_request(conversation: Conversation, response: str, prompt_format: str = "plain") -> list[Message]:
  """What a reward model scores, rendered with `add_generation_prompt=False`."""
  return _layout(prompt_format).select_request(conversation, response)
