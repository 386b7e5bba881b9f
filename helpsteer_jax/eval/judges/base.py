"""The judge interfaces and the request/reply records they exchange."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional, Protocol, Union, runtime_checkable

from helpsteer_jax.formats.messages import Conversation, Message


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  """One chat-completions call: the messages and the sampling parameters that change the reply."""

  messages: tuple[tuple[str, str], ...]  # (role, content) pairs; a tuple so requests hash
  temperature: float = 0.0
  max_tokens: int = 1024
  top_logprobs: int = 0  # >0 asks for the top alternatives of each generated token

  @staticmethod
  def of(
    messages: Sequence[Message], temperature: float = 0.0, max_tokens: int = 1024, top_logprobs: int = 0
  ) -> "ChatRequest":
    return ChatRequest(
      tuple((m["role"], m["content"]) for m in messages), float(temperature), int(max_tokens), int(top_logprobs)
    )

  def message_dicts(self) -> list[Message]:
    return [{"role": role, "content": content} for role, content in self.messages]


@dataclasses.dataclass(frozen=True)
class ChatReply:
  text: str
  # For each of the first generated tokens: {token text: logprob} over the top alternatives;
  # None when the judge does not report log-probabilities.
  top_logprobs: Optional[list[dict[str, float]]] = None
  cached: bool = False


@runtime_checkable
class ChatJudge(Protocol):
  name: str  # the judge model's name, recorded in every judgment

  def chat(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
    """One reply per request, in order."""
    ...


@runtime_checkable
class ScoreJudge(Protocol):
  name: str

  def score(self, conversations: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
    """One score per (conversation, response); higher is better."""
    ...


Judge = Union[ChatJudge, ScoreJudge]
