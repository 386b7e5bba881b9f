"""Generic chat SFT rows: `{"messages": [{"role", "content"}, ...]}` with the loss on assistant turns.

The scaling search's distillation export (`distill.jsonl`) is in this form, so its best answers
train a policy directly; so is any hand-made SFT set.

TRL's prompt-completion rows are read too, with the loss on the completion alone (TRL's
`completion_only_loss` default): `{"prompt": [messages], "completion": [assistant messages]}`
as they are, and `{"prompt": str, "completion": str}` as one user turn and one assistant turn,
so the model learns the completion in its chat template (a choice: TRL trains that form as
plain text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from helpsteer_jax.data.examples import BuildStats, ChatExample, Message, RowError, freeze, messages_field


@dataclasses.dataclass(frozen=True)
class ChatMessagesBuilder:
  """One example per row; `all_assistant_turns=False` learns only the final assistant turn."""

  all_assistant_turns: bool = True

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[ChatExample]:
    if "messages" not in row and "prompt" in row and "completion" in row:
      return [prompt_completion_example(row, where)]
    messages = freeze(messages_field(row, "messages", last_role="assistant"))
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not self.all_assistant_turns:
      turns = turns[-1:]
    return [ChatExample(messages=messages, loss_turns=tuple(turns), source=where)]


def prompt_completion_example(row: Mapping[str, Any], where: str) -> ChatExample:
  """A TRL prompt-completion row (conversational or standard) as one example learning the
  completion."""
  prompt, completion = row["prompt"], row["completion"]
  if isinstance(prompt, str) and isinstance(completion, str):
    if not prompt.strip() or not completion.strip():
      raise RowError("fields 'prompt' and 'completion' must be non-empty strings")
    messages: tuple[Message, ...] = ({"role": "user", "content": prompt}, {"role": "assistant", "content": completion})
    return ChatExample(messages=messages, loss_turns=(1,), source=where)
  if isinstance(prompt, str) or isinstance(completion, str):
    raise RowError("fields 'prompt' and 'completion' must both be strings or both be message lists")
  context = messages_field(row, "prompt", last_role=prompt[-1].get("role", "user") if prompt else "user")
  answer = messages_field(row, "completion", last_role="assistant")
  messages = freeze(context + answer)
  turns = tuple(len(context) + i for i, m in enumerate(answer) if m["role"] == "assistant")
  return ChatExample(messages=messages, loss_turns=turns, source=where)
