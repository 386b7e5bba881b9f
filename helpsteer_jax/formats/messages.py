"""The chat message types every layer shares: a message is `{"role", "content"}`, a conversation
a sequence of them (system, user and assistant turns, in order)."""

from __future__ import annotations

from collections.abc import Sequence

Message = dict[str, str]
Conversation = Sequence[Message]


def assistant(content: str) -> Message:
  return {"role": "assistant", "content": content}


def user(content: str) -> Message:
  return {"role": "user", "content": content}
