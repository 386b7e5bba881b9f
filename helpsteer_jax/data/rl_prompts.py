"""Prompts for RL: HelpSteer3 edit rows as (edit request, original response), or prompt-only files.

The request is the Edit model's own prompt (`formats.prompts.edit_request`: conversation, the
original response, the feedback in the row's order, in the Edit role's `prompt_format`), so RL trains the model on exactly what the
search asks of it; the original response is kept to measure how often an edit merely copies it.
Prompt-only files (data set `rl_prompts`) hold one prompt per row, as `{"prompt": str}` or
`{"messages": [...]}` ending on a user turn, with an optional `original_response` (the text an
edit should change; without it the copy rate counts empty answers only).
The iterator is seeded, repeats forever, and resumes from a small state dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from helpsteer_jax.data.examples import (
  BuildStats,
  DataError,
  Message,
  RowError,
  field,
  messages_field,
  text_field,
)
from helpsteer_jax.data.sources import SourceSpec, read_rows
from helpsteer_jax.formats import prompts as layouts


@dataclasses.dataclass(frozen=True)
class EditPrompt:
  messages: tuple[Message, ...]  # the Edit model's prompt
  original: str  # the response being edited
  source: str


def load_edit_prompts(spec: SourceSpec, on_error: str = "raise", prompt_format: str = "plain") -> list[EditPrompt]:
  layouts.check_prompt_format(prompt_format, "edit")
  stats = BuildStats()
  prompts = []
  for row in read_rows(spec, on_error=on_error, stats=stats):
    try:
      context = messages_field(row.data, "context")
      original = text_field(row.data, "original_response")
      feedback = row.data.get("feedback")
      if not isinstance(feedback, list) or not feedback or not all(isinstance(f, str) and f.strip() for f in feedback):
        raise RowError("field 'feedback' must be a non-empty list of feedback texts")
    except RowError as e:
      if on_error == "raise":
        raise DataError(f"{row.where}: {e}") from None
      stats.skip("malformed_row", f"{row.where}: {e}")
      continue
    request = layouts.edit_request(context, original, feedback, prompt_format)
    prompts.append(EditPrompt(tuple(request), original, row.where))
  if not prompts:
    raise DataError(f"no edit prompts in {spec.describe()} ({stats.summary()})")
  return prompts


def _prompt_only(row: dict[str, Any]) -> tuple[list[Message], str]:
  if "messages" in row:
    messages = messages_field(row, "messages", last_role="user")
  else:
    prompt = field(row, "prompt")
    if not isinstance(prompt, str) or not prompt.strip():
      raise RowError(f"field 'prompt' must be a non-empty string, got {type(prompt).__name__}")
    messages = [{"role": "user", "content": prompt}]
  original = row.get("original_response", "")
  if not isinstance(original, str):
    raise RowError(f"field 'original_response' must be a string, got {type(original).__name__}")
  return messages, original


def load_prompt_file(spec: SourceSpec, on_error: str = "raise") -> list[EditPrompt]:
  """Prompt-only rows (`prompt` or `messages`, optional `original_response`), used as they are."""
  stats = BuildStats()
  prompts = []
  for row in read_rows(spec, on_error=on_error, stats=stats):
    try:
      messages, original = _prompt_only(row.data)
    except RowError as e:
      if on_error == "raise":
        raise DataError(f"{row.where}: {e}") from None
      stats.skip("malformed_row", f"{row.where}: {e}")
      continue
    prompts.append(EditPrompt(tuple(messages), original, row.where))
  if not prompts:
    raise DataError(f"no prompts in {spec.describe()} ({stats.summary()})")
  return prompts


# RL prompt sets by data set name: HelpSteer3 edit rows, or prompt-only files.
RL_DATASETS = ("helpsteer3_edit", "rl_prompts")


def load_rl_prompts(
  spec: SourceSpec, dataset: str, on_error: str = "raise", prompt_format: str = "plain"
) -> list[EditPrompt]:
  if dataset == "helpsteer3_edit":
    return load_edit_prompts(spec, on_error, prompt_format)
  if dataset == "rl_prompts":
    return load_prompt_file(spec, on_error)
  raise ValueError(f"RLOO data set {dataset!r}; expected one of {RL_DATASETS}")


class PromptIterator:
  """Batches of `batch_size` prompts in a seeded order per epoch; `get_state`/`set_state` resume."""

  def __init__(self, prompts: list[EditPrompt], batch_size: int, seed: int = 0):
    if batch_size > len(prompts):
      # Small prompt sets repeat within a batch rather than fail: RL samples them k times anyway.
      prompts = prompts * (-(-batch_size // len(prompts)))
    self.prompts, self.batch_size, self.seed = prompts, batch_size, seed
    self.epoch, self.position = 0, 0

  def epoch_batches(self, num_epochs: int) -> list[int]:
    """Batches per epoch (each epoch's last partial batch is left out, as `__next__` does)."""
    return [len(self.prompts) // self.batch_size] * num_epochs

  def _order(self) -> np.ndarray:
    return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.prompts))

  def __next__(self) -> list[EditPrompt]:
    if self.position + self.batch_size > len(self.prompts):
      self.epoch, self.position = self.epoch + 1, 0
    order = self._order()
    batch = [self.prompts[i] for i in order[self.position : self.position + self.batch_size]]
    self.position += self.batch_size
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_prompts": len(self.prompts)}

  def set_state(self, state: dict[str, Any]) -> None:
    if int(state.get("num_prompts", -1)) != len(self.prompts):
      raise ValueError(f"prompt iterator state {state} does not match {len(self.prompts)} prompts")
    self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
