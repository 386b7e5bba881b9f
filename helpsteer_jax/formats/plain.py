"""The `plain` layouts: the project's own one-turn prompts.

The feedback, edit and judge roles each get one user message that quotes the conversation as text
(`[User]`, `[Assistant]`, `[System]` blocks) followed by the response and the instruction, so a
general instruct model playing a role ("self-feedback", "self-edit") and a model trained here on
data built with the same functions see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from helpsteer_jax.formats.messages import Conversation, Message, assistant, user

HELPFULNESS_LEVELS = ("not", "slightly", "partially", "mostly", "perfectly")
JUDGE_ANSWER_PREFIX = "Helpfulness score:"
JUDGE_INSTRUCTION = (
  "Rate how helpful the response is to the user, from 0 (not helpful) to 4 "
  "(perfectly helpful). Answer with a single digit."
)


def render_conversation(conversation: Conversation) -> str:
  """A conversation as plain text, one `[Role]` block per turn."""
  blocks = []
  for message in conversation:
    role = message["role"].capitalize()
    blocks.append(f"[{role}]\n{message['content'].strip()}")
  return "\n\n".join(blocks)


def _context_and_response(conversation: Conversation, response: str) -> str:
  return (
    "Here is a conversation between a user and an AI assistant.\n\n"
    f"{render_conversation(conversation)}\n\n"
    "Here is the assistant's next response.\n\n"
    f"[Response]\n{response.strip()}"
  )


def feedback_request(conversation: Conversation, response: str) -> list[Message]:
  """Asks for HelpSteer3-style feedback on the overall helpfulness of `response`."""
  levels = " / ".join(HELPFULNESS_LEVELS)
  return [
    user(
      f"{_context_and_response(conversation, response)}\n\n"
      "Write feedback on how helpful the response is, in 2 to 10 sentences. Begin with "
      f'"The response is {{{levels}}} helpful", choosing one level. Then name concretely what is '
      "wrong, missing or unclear, and what should be changed."
    )
  ]


def edit_request(conversation: Conversation, response: str, feedback: Sequence[str]) -> list[Message]:
  """Asks for the response rewritten to act on every item of `feedback`."""
  items = "\n\n".join(f"[Feedback {i + 1}]\n{text.strip()}" for i, text in enumerate(feedback))
  return [
    user(
      f"{_context_and_response(conversation, response)}\n\n"
      f"Here is feedback on the response.\n\n{items}\n\n"
      "Rewrite the response so that it addresses the feedback. Reply with the edited response only."
    )
  ]


def revision_request(conversation: Conversation, response: str) -> list[Message]:
  """The "edit without feedback" ablation: improve the response with no feedback given."""
  return [
    user(
      f"{_context_and_response(conversation, response)}\n\n"
      "Rewrite the response to make it more helpful. Reply with the improved response only."
    )
  ]


def judge_request(conversation: Conversation, response: str) -> list[Message]:
  """Asks a generative judge for a 0-4 helpfulness score; the assistant turn is pre-filled with
  `JUDGE_ANSWER_PREFIX` so the score is the very next token."""
  return [
    user(f"{_context_and_response(conversation, response)}\n\n{JUDGE_INSTRUCTION}"),
    assistant(JUDGE_ANSWER_PREFIX),
  ]


def select_request(conversation: Conversation, response: str) -> list[Message]:
  """What a reward model scores: the conversation's turns, then the response as the next
  assistant turn (rendered without a generation prompt)."""
  return list(conversation) + [assistant(response)]
