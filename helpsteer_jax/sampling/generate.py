"""`hj.generate`: chat conversations in, n sampled answers per conversation out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens

Conversation = Sequence[dict[str, str]]


def encode_conversations(tokenizer: Any, conversations: Sequence[Conversation]) -> list[list[int]]:
  """Chat-templated prompt ids ending with the assistant's generation prompt."""
  prompts = []
  for i, conversation in enumerate(conversations):
    if not conversation:
      raise ValueError(f"conversation {i} is empty; expected a list of {{'role', 'content'}} messages")
    for message in conversation:
      if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ValueError(f"conversation {i}: message {message!r} lacks 'role' or 'content'")
    text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
    prompts.append(tokenizer.encode(text, add_special_tokens=False))
  return prompts


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
  from helpsteer_jax.checkpoints.tokenizers import stop_token_ids as default_stops

  stops = tuple(stop_token_ids) if stop_token_ids is not None else default_stops(tokenizer)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
  settings = SamplingSettings(
      max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=top_k, top_p=top_p,
      stop_token_ids=stops, pad_id=int(pad_id),
  )
  prompts = encode_conversations(tokenizer, conversations)
  samples = sample_tokens(model, prompts, settings, n=n, seed=seed)
  return [[tokenizer.decode(ids, skip_special_tokens=True) for ids in per_prompt] for per_prompt in samples]
