"""Examples -> token ids with the tokenizer's own chat template, a loss mask, and truncation.

SFT loss mask: 1 on the tokens of each loss turn's assistant output (its content and the
end-of-turn token that stops generation), 0 on everything else (system, user, conditioning, role
headers, earlier turns, and template text after the end-of-turn token such as ChatML's newline).

How the mask is found without template markup: the template renders the conversation up to a loss
turn with the generation prompt (what the model is given at inference) and up to the end of that
turn; the difference is the assistant output. Each stretch of context is then encoded in one
tokenizer call and each assistant output in another, so the prompt tokens are exactly those
`sampling.generate.encode_conversations` gives the model at inference, and the output tokens are
exactly the text it must generate (a token never straddles prompt and output).

Reward-model inputs (pairs, regression) are rendered whole and encoded in one call, exactly as
`scoring.selectors.RewardModelSelector` encodes what it scores.

Truncation (`max_length`): `"drop"` leaves over-long examples out; `"left"` cuts tokens from the
left of the prompt (keeping a leading BOS token), as long as the whole final assistant output still
fits, and drops the example otherwise. Both are counted in `stats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from helpsteer_jax.checkpoints.chat_templates import END_OF_TURN_TOKENS
from helpsteer_jax.data.examples import (
  PAIR_KINDS,
  BuildStats,
  ChatExample,
  Example,
  Message,
  PairExample,
  RegressionExample,
)

TRUNCATION = ("drop", "left")


@dataclasses.dataclass(frozen=True)
class TokenizedChat:
  input_ids: np.ndarray  # [L] int32
  loss_mask: np.ndarray  # [L] bool: True on tokens the model learns to predict
  source: str = ""

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
  chosen: np.ndarray  # [L1] int32
  rejected: np.ndarray  # [L2] int32
  label_magnitude: float
  kind: int  # index into PAIR_KINDS
  source: str = ""

  def __len__(self) -> int:
    return max(int(self.chosen.shape[0]), int(self.rejected.shape[0]))


@dataclasses.dataclass(frozen=True)
class TokenizedRegression:
  input_ids: np.ndarray  # [L] int32
  targets: np.ndarray  # [O] float32, MISSING_LABEL where absent
  source: str = ""

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])


Tokenized = Union[TokenizedChat, TokenizedPair, TokenizedRegression]


class TemplateError(ValueError):
  """The chat template renders a conversation's prefix differently from the whole conversation,
  so the assistant output cannot be located."""


class ChatEncoder:
  """Tokenises examples for training with `tokenizer`'s chat template (see the module doc)."""

  def __init__(self, tokenizer: Any, max_length: int, truncation: str = "drop", stats: Optional[BuildStats] = None):
    if truncation not in TRUNCATION:
      raise ValueError(f"truncation={truncation!r}; expected one of {TRUNCATION}")
    if max_length < 2:
      raise ValueError(f"max_length={max_length}; expected at least 2 tokens")
    if not getattr(tokenizer, "chat_template", None):
      raise ValueError("the tokenizer has no chat template; attach one (see checkpoints/chat_templates.py)")
    self.tokenizer = tokenizer
    self.max_length = int(max_length)
    self.truncation = truncation
    self.stats = stats if stats is not None else BuildStats()
    self.bos_id = getattr(tokenizer, "bos_token_id", None)
    self.end_of_turn = self._end_of_turn_strings(tokenizer)

  @staticmethod
  def _end_of_turn_strings(tokenizer: Any) -> tuple[str, ...]:
    vocab = tokenizer.get_vocab()
    strings = [t for t in END_OF_TURN_TOKENS if t in vocab]
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos and eos not in strings:
      strings.append(eos)
    return tuple(strings)

  # -- rendering -------------------------------------------------------------------------------

  def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    return self.tokenizer.apply_chat_template(
      [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )

  def pieces(self, example: ChatExample) -> list[tuple[str, bool]]:
    """The rendered text of `example` up to its last loss turn's end-of-turn token, as
    (text, is_loss) spans; consecutive context spans are merged."""
    messages = example.messages
    spans: list[tuple[str, bool]] = []
    consumed = ""
    for turn in example.loss_turns:
      if turn == 0:
        raise TemplateError(f"{example.source}: a loss turn needs a preceding message (turn 0 is one)")
      prompt = self.render(messages[:turn], add_generation_prompt=True)
      full = self.render(messages[: turn + 1])
      if not prompt.startswith(consumed) or not full.startswith(prompt):
        raise TemplateError(
          f"{example.source}: the chat template does not render turn {turn} as an extension of "
          "the turns before it, so the assistant output cannot be located for the loss mask"
        )
      spans.append((prompt[len(consumed) :], False))
      output = full[len(prompt) :]
      cut = self._end_of_output(output)
      spans.append((output[:cut], True))
      if cut < len(output):
        spans.append((output[cut:], False))
      consumed = full
    if spans and not spans[-1][1]:
      spans.pop()  # template text after the last end-of-turn token has nothing to predict
    merged: list[tuple[str, bool]] = []
    for text, is_loss in spans:
      if not text:
        continue
      if merged and not is_loss and not merged[-1][1]:
        merged[-1] = (merged[-1][0] + text, False)
      else:
        merged.append((text, is_loss))
    return merged

  def _end_of_output(self, output: str) -> int:
    """Where the assistant output ends: just after its last end-of-turn token, or the end."""
    best = -1
    for token in self.end_of_turn:
      at = output.rfind(token)
      if at >= 0:
        best = max(best, at + len(token))
    return len(output) if best < 0 else best

  def _encode_texts(self, texts: list[str]) -> list[list[int]]:
    """One batched tokenizer call (the fast tokenizer encodes a batch on several threads)."""
    if not texts:
      return []
    return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

  # -- public encoders -------------------------------------------------------------------------

  def encode(self, example: Example) -> Optional[Tokenized]:
    return self.encode_many([example])[0]

  def encode_many(self, examples: Sequence[Example]) -> list[Optional[Tokenized]]:
    """Tokenised examples in order; None for one dropped by the length rules (counted)."""
    texts: list[str] = []
    plans: list[tuple[Example, Any]] = []
    for example in examples:
      start = len(texts)
      if isinstance(example, ChatExample):
        spans = self.pieces(example)
        texts.extend(text for text, _ in spans)
        plans.append((example, (start, [flag for _, flag in spans])))
      elif isinstance(example, PairExample):
        for messages in (example.chosen, example.rejected):
          texts.append(self.render(messages))
          texts.append(self.render(messages[:-1], add_generation_prompt=True))
        plans.append((example, start))
      elif isinstance(example, RegressionExample):
        texts.append(self.render(example.messages))
        texts.append(self.render(example.messages[:-1], add_generation_prompt=True))
        plans.append((example, start))
      else:
        raise TypeError(f"cannot encode {type(example).__name__}; expected a chat, pair or regression example")
    ids = self._encode_texts(texts)
    out: list[Optional[Tokenized]] = []
    for example, plan in plans:
      if isinstance(example, ChatExample):
        start, flags = plan
        out.append(self._chat(example, ids[start : start + len(flags)], flags))
      elif isinstance(example, PairExample):
        chosen = self._scored(ids[plan], ids[plan + 1], example.source)
        rejected = self._scored(ids[plan + 2], ids[plan + 3], example.source)
        if chosen is None or rejected is None:
          out.append(None)
        else:
          out.append(
            TokenizedPair(
              chosen, rejected, float(example.label_magnitude), PAIR_KINDS.index(example.kind), example.source
            )
          )
      else:
        seq = self._scored(ids[plan], ids[plan + 1], example.source)
        out.append(
          None if seq is None else TokenizedRegression(seq, np.asarray(example.targets, np.float32), example.source)
        )
    return out

  # -- assembling and truncating ---------------------------------------------------------------

  def _chat(self, example: ChatExample, chunks: list[list[int]], flags: list[bool]) -> Optional[TokenizedChat]:
    ids = np.fromiter((t for chunk in chunks for t in chunk), np.int32)
    mask = np.concatenate([np.full(len(c), f, bool) for c, f in zip(chunks, flags)]) if chunks else np.zeros(0, bool)
    if not mask.any():
      self.stats.add("dropped_no_loss_tokens")
      return None
    if len(ids) <= self.max_length:
      return TokenizedChat(ids, mask, example.source)
    # The last span is the final assistant output: it must survive truncation whole.
    last_output_start = len(ids) - len(chunks[-1])
    kept = self._truncate_left(len(ids), last_output_start, int(ids[0]))
    if kept is None:
      return None
    return TokenizedChat(ids[kept], mask[kept], example.source)

  def _scored(self, full: list[int], prompt: list[int], source: str) -> Optional[np.ndarray]:
    ids = np.asarray(full, np.int32)
    if len(ids) <= self.max_length:
      return ids
    response_start = min(len(prompt), len(ids) - 1)
    kept = self._truncate_left(len(ids), response_start, int(ids[0]))
    return None if kept is None else ids[kept]

  def _truncate_left(self, length: int, must_keep_from: int, first_id: int) -> Optional[np.ndarray]:
    """Indices to keep of a sequence over `max_length` (None = drop it, counted): the last
    tokens, plus a leading BOS, provided every token from `must_keep_from` on is kept."""
    if self.truncation == "drop":
      self.stats.add("dropped_too_long")
      return None
    keep_bos = self.bos_id is not None and first_id == self.bos_id
    budget = self.max_length - int(keep_bos)
    start = length - budget
    if start > must_keep_from:
      self.stats.add("dropped_output_too_long")
      return None
    self.stats.add("truncated_left")
    tail = np.arange(start, length)
    return np.concatenate([[0], tail]) if keep_bos else tail
