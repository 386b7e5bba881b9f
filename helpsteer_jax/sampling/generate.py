"""`hj.generate`: chat conversations in, n sampled answers per conversation out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

from helpsteer_jax.checkpoints.tokenizers import stop_token_ids as default_stops
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens


@dataclasses.dataclass(frozen=True)
class Sample:
  text: str
  num_tokens: int  # tokens generated, stop token excluded
  finished: bool  # ended with a stop token (False: cut at max_new_tokens, or stopped early)
  stopped_early: bool = False  # ended by its request's early stop (sampling/engine.py EarlyStop)


def encode_conversations(
  tokenizer: Any, conversations: Sequence[Conversation], continue_final: bool = False
) -> list[list[int]]:
  """Chat-templated prompt ids ending with the assistant's generation prompt (or, with
  `continue_final`, inside a final assistant message that the model continues)."""
  prompts = []
  for i, conversation in enumerate(conversations):
    if not conversation:
      raise ValueError(f"conversation {i} is empty; expected a list of {{'role', 'content'}} messages")
    for message in conversation:
      if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ValueError(f"conversation {i}: message {message!r} lacks 'role' or 'content'")
    text = tokenizer.apply_chat_template(
      list(conversation),
      tokenize=False,
      add_generation_prompt=not continue_final,
      continue_final_message=continue_final,
    )
    prompts.append(tokenizer.encode(text, add_special_tokens=False))
  return prompts


def sampling_settings(
  tokenizer: Any,
  max_new_tokens: int = 64,
  temperature: float = 0.0,
  top_k: Optional[int] = None,
  top_p: Optional[float] = None,
  stop_token_ids: Optional[Sequence[int]] = None,
) -> SamplingSettings:
  """Settings with the tokenizer's stop tokens and padding id filled in."""
  stops = tuple(stop_token_ids) if stop_token_ids is not None else tuple(default_stops(tokenizer))
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
  return SamplingSettings(
    max_new_tokens=max_new_tokens,
    temperature=float(temperature),
    top_k=top_k,
    top_p=top_p,
    stop_token_ids=stops,
    pad_id=int(pad_id),
  )


def generate_samples(
  model: Llama,
  tokenizer: Any,
  conversations: Sequence[Conversation],
  settings: SamplingSettings,
  n: int = 1,
  seed: int = 0,
  batch_size: int = 32,
  names: Optional[Sequence[object]] = None,
) -> list[list[Sample]]:
  """n `Sample`s per conversation, decoded by an engine of at most `batch_size` slots.

  Conversation i's samples draw from the key of (seed, names[i]) (default: its index), so they do
  not depend on the other conversations of the call."""
  prompts = encode_conversations(tokenizer, conversations)
  tokens = sample_tokens(model, prompts, settings, n=n, seed=seed, names=names, num_slots=batch_size)
  return [[to_sample(tokenizer, ids, settings) for ids in per_prompt] for per_prompt in tokens]


def to_sample(tokenizer: Any, ids: Sequence[int], settings: SamplingSettings) -> Sample:
  return Sample(tokenizer.decode(list(ids), skip_special_tokens=True), len(ids), len(ids) < settings.max_new_tokens)


def generate(
  model: Llama,
  tokenizer: Any,
  conversations: Sequence[Conversation],
  max_new_tokens: int = 64,
  temperature: float = 0.0,
  n: int = 1,
  seed: int = 0,
  top_k: Optional[int] = None,
  top_p: Optional[float] = None,
  stop_token_ids: Optional[Sequence[int]] = None,
) -> list[list[str]]:
  """Returns, for each conversation, `n` answers (strings without the stop token)."""
  settings = sampling_settings(tokenizer, max_new_tokens, temperature, top_k, top_p, stop_token_ids)
  samples = generate_samples(model, tokenizer, conversations, settings, n=n, seed=seed)
  return [[s.text for s in per_prompt] for per_prompt in samples]
