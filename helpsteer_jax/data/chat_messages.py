"""Generic chat SFT rows: `{"messages": [{"role", "content"}, ...]}` with the loss on assistant turns.

The scaling search's distillation export (`distill.jsonl`) is in this form, so its best answers
train a policy directly; so is any hand-made SFT set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from helpsteer_jax.data.examples import BuildStats, ChatExample, freeze, messages_field


@dataclasses.dataclass(frozen=True)
class ChatMessagesBuilder:
  """One example per row; `all_assistant_turns=False` learns only the final assistant turn."""

  all_assistant_turns: bool = True

  def __call__(self, row: Mapping[str, Any], where: str, stats: BuildStats) -> list[ChatExample]:
    messages = freeze(messages_field(row, "messages", last_role="assistant"))
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not self.all_assistant_turns:
      turns = turns[-1:]
    return [ChatExample(messages=messages, loss_turns=tuple(turns), source=where)]
