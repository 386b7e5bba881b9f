"""Selectors score every candidate answer of the search; the highest score is returned.

- `RewardModelSelector`: a reward model with a scalar head reads (conversation, response), laid
  out by `prompt_format` and rendered without a generation prompt (as NVIDIA's Select card does).
  A Select model stored as a causal LM loads as a one-output reward model whose head is the
  output-layer row of its reward logit (`load_reward_model(path, logit_index=0)`).
- `GenerativeJudgeSelector`: an instruct model (the policy itself when no reward model is at hand)
  is asked for a 0-4 helpfulness score; the score is the expectation of the digit under the
  model's next-token distribution, so it needs one forward pass and no decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.models.heads import RewardModel, head_scores
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.host_values import to_host
from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill, breaks_for
from helpsteer_jax.sampling.settings import bucket, keep_ends, left_pad, prompt_bucket


def model_key_of(model: Any) -> str:
  """The key of a model given as an object, not by checkpoint: roles and selectors over the same
  object share it (scaling/search.py)."""
  return f"object-{id(model)}"


class Selector(Protocol):
  """What the search asks of a selector. `model_key` names its model as the search's roles name
  theirs (their checkpoint's key, or `model_key_of`): a selector that `shares_prefill` scores
  through the prefill of the decode engine over a role's model with the same key, handed to it by
  `use_prefill`, and its prompts (`prompt_ids`) then take part in that engine's shared prefixes."""

  name: str
  model_key: str
  shares_prefill: bool

  def score(self, items: Sequence[tuple[Conversation, str]], prefixes: Sequence[Sequence[int]] = ()) -> list[float]:
    """One score per (conversation, response); higher is better. `prefixes`: token prefixes the
    prompts on a shared prefill start with (sampling/chunked_prefill.py `breaks_for`)."""
    ...

  def prompt_ids(self, conversation: Conversation, response: str) -> list[int]:
    """The ids of the prompt scored for (conversation, response)."""
    ...

  def use_prefill(self, prefill: Optional[ChunkedPrefill]) -> None:
    """Scores through `prefill` from now on (only called when `shares_prefill`); None: without
    it again."""
    ...


@partial(jax.jit, static_argnames=("graphdef",))
def _last_position_logits(graphdef, state, ids, mask):
  """Left-padded ids [B, T] -> fp32 logits of the last position [B, V]."""
  model: Llama = nnx.merge(graphdef, state)
  hidden, _ = model.hidden_states(ids, input_mask=mask)
  return model.logits(hidden[:, -1:])[:, 0]


@partial(jax.jit, static_argnames=("graphdef",))
def _reward_scores(graphdef, state, ids, mask):
  return nnx.merge(graphdef, state)(ids, mask)


_head_scores = jax.jit(head_scores)


def _run_bucketed(
  fn, model: nnx.Module, prompts: list[list[int]], pad_id: int, batch_size: int, context: int
) -> np.ndarray:
  """Runs `fn(graphdef, state, ids, mask)` over prompts in left-padded, length-bucketed batches."""
  graphdef, state = nnx.split(model)
  outputs = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start : start + batch_size]
    longest = max(len(p) for p in chunk)
    if longest > context:
      raise ValueError(f"a prompt to score has {longest} tokens; the model's context is {context}")
    ids, mask = left_pad(chunk, prompt_bucket(longest), bucket(len(chunk), minimum=1), pad_id)
    outputs.append(to_host(fn(graphdef, state, jnp.asarray(ids), jnp.asarray(mask)))[: len(chunk)])
  return np.concatenate(outputs, axis=0)


def _pad_id(tokenizer: Any) -> int:
  return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0)


class RewardModelSelector:
  """Scores (conversation, response) with a reward model: its scalar output, or for a
  multi-attribute head the weighted sum of the attributes (`weights` [O], e.g. HelpSteer2's)."""

  name = "reward_model"
  shares_prefill = False  # its head reads the last hidden state, not a decode engine's logits

  def __init__(
    self,
    model: RewardModel,
    tokenizer: Any,
    batch_size: int = 16,
    weights: Sequence[float] | np.ndarray | None = None,
    max_tokens: int = 0,
    prompt_format: str = "plain",
    model_key: str = "",
    shared_prefill: bool = False,
    prefill_chunk: int = 128,
    keep_prefill_mb: int = 1024,
  ):
    """`max_tokens` > 0 cuts longer inputs to their first token (BOS) and last `max_tokens` - 1,
    where the request and the response are: long contexts cost quadratic attention time.
    `prompt_format` lays out (conversation, response) as the model was trained to read it.
    `shared_prefill`: each item is prefilled chunk by chunk (`prefill_chunk` tokens, chunks kept
    up to `keep_prefill_mb` MiB), its chunks breaking where the conversation ends, so that the
    candidates of one conversation compute it once (sampling/chunked_prefill.py); else items are
    scored in left-padded batches."""
    if model.num_outputs > 1 and weights is None:
      raise ValueError(
        f"the reward model has {model.num_outputs} outputs; give `weights` (one per output) to turn them into one score"
      )
    if weights is not None and len(weights) != model.num_outputs:
      raise ValueError(f"{len(weights)} weights for a reward model with {model.num_outputs} outputs")
    self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
    self.weights = None if weights is None else np.asarray(weights, np.float32)
    self.max_tokens = max_tokens
    self.prompt_format = templates.check_prompt_format(prompt_format, "select")
    self.model_key = model_key or model_key_of(model)
    self.prefill: Optional[ChunkedPrefill] = None
    if shared_prefill:
      self.prefill = ChunkedPrefill(model.trunk, prefill_chunk, keep_prefill_mb << 20)

  def prompt_ids(self, conversation: Conversation, response: str) -> list[int]:
    return self.encode(conversation, response)

  def use_prefill(self, prefill: Optional[ChunkedPrefill]) -> None:
    raise TypeError("a reward model selector scores with its own head, not through a shared prefill")

  def encode(self, conversation: Conversation, response: str) -> list[int]:
    """The token ids scored for one (conversation, response), before any `max_tokens` cut."""
    messages = templates.select_request(conversation, response, self.prompt_format)
    text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return self.tokenizer.encode(text, add_special_tokens=False)

  def conversation_end(self, conversation: Conversation, prompt: Sequence[int]) -> int:
    """Where `prompt` (scored for a response to `conversation`) stops matching the conversation
    scored with an empty response: the shared part of every candidate's prompt."""
    alone = self.encode(conversation, "")
    n = min(len(alone), len(prompt))
    mismatch = np.flatnonzero(np.asarray(alone[:n]) != np.asarray(prompt[:n]))
    return int(mismatch[0]) if mismatch.size else n

  def score_all(self, items: Sequence[tuple[Conversation, str]]) -> np.ndarray:
    """Every output of the model per item: [len(items), O]."""
    if not items:
      return np.zeros((0, self.model.num_outputs), np.float32)
    prompts = [keep_ends(self.encode(conv, response), self.max_tokens) for conv, response in items]
    if self.prefill is not None:
      head = self.model.head[...]
      rows = []
      for (conv, _), prompt in zip(items, prompts):
        end = self.conversation_end(conv, prompt)
        hidden = self.prefill.last_hidden(prompt, (end,) if 0 < end < len(prompt) else ())
        rows.append(to_host(_head_scores(hidden, head))[0])
      return np.stack(rows)
    return _run_bucketed(
      _reward_scores,
      self.model,
      prompts,
      _pad_id(self.tokenizer),
      self.batch_size,
      self.model.config.max_position_embeddings,
    )

  def score(self, items: Sequence[tuple[Conversation, str]], prefixes: Sequence[Sequence[int]] = ()) -> list[float]:
    del prefixes  # scored in its own left-padded batches
    scores = self.score_all(items)
    combined = scores[:, 0] if self.weights is None else scores @ self.weights
    return [float(s) for s in combined]


class GenerativeJudgeSelector:
  """Scores in left-padded batches of `batch_size`; once `use_prefill` hands it the chunked
  prefill of a decode engine over the same model, one item at a time through that engine's kept
  chunks instead: the search's judge requests begin as its Feedback and Edit requests about the
  same draft do (formats/plain.py), so most of each judge prompt is already computed.
  `model` may be None until it is scored with (the staged schedule loads it for its stage)."""

  name = "generative_judge"
  shares_prefill = True

  def __init__(
    self,
    model: Optional[Llama],
    tokenizer: Any,
    batch_size: int = 16,
    prompt_format: str = "plain",
    model_key: str = "",
  ):
    self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
    self.prompt_format = templates.check_prompt_format(prompt_format, "judge")
    self.model_key = model_key or model_key_of(model)
    self.prefill: Optional[ChunkedPrefill] = None

  def use_prefill(self, prefill: Optional[ChunkedPrefill]) -> None:
    """Scores through `prefill` (a decode engine's over this judge's model,
    sampling/chunked_prefill.py); None: in its own batches again."""
    self.prefill = prefill

  def _text(self, conversation: Conversation, response: str) -> str:
    return self.tokenizer.apply_chat_template(
      templates.judge_request(conversation, response, self.prompt_format), tokenize=False, continue_final_message=True
    )

  def prompt_ids(self, conversation: Conversation, response: str) -> list[int]:
    """The judge prompt's ids up to the answer prefix (what prompts about the same conversation or
    response may share with it: sampling/chunked_prefill.py `breaks_for`)."""
    return self.tokenizer.encode(self._text(conversation, response), add_special_tokens=False)

  def _encode(self, conversation: Conversation, response: str) -> tuple[list[int], list[int]]:
    """Prompt ids ending right before the score digit, and the token id of each digit 0-4."""
    text = self._text(conversation, response)
    encode = lambda s: self.tokenizer.encode(s, add_special_tokens=False)
    # Tokenizers differ on digits after a space (" 4" is one token for Llama-3, two for SmolLM2),
    # so pick the split where every digit is exactly one token after the prompt.
    for base, form in ((text, " {}"), (text + " ", "{}"), (text, "{}")):
      prefix = encode(base)
      digits = []
      for d in range(5):
        full = encode(base + form.format(d))
        if len(full) != len(prefix) + 1 or full[:-1] != prefix:
          break
        digits.append(full[-1])
      if len(digits) == 5 and len(set(digits)) == 5:
        return prefix, digits
    raise ValueError("the judge's tokenizer cannot score digits 0-4 as single next tokens")

  def score(self, items: Sequence[tuple[Conversation, str]], prefixes: Sequence[Sequence[int]] = ()) -> list[float]:
    """`prefixes`: token prefixes that other prompts on the shared prefill start with; through it,
    each item's chunks break where its prompt stops matching one (sampling/chunked_prefill.py `breaks_for`)."""
    if not items:
      return []
    encoded = [self._encode(conv, response) for conv, response in items]
    logits: list[np.ndarray] | np.ndarray
    if self.prefill is not None:
      logits = [self.prefill.next_token_logits(p, breaks_for(p, prefixes)) for p, _ in encoded]
    else:
      if self.model is None:
        raise RuntimeError("the judge's model is not loaded")
      logits = _run_bucketed(
        _last_position_logits,
        self.model,
        [p for p, _ in encoded],
        _pad_id(self.tokenizer),
        self.batch_size,
        self.model.config.max_position_embeddings,
      )
    scores = []
    for row, (_, digits) in zip(logits, encoded):
      digit_logits = row[digits]
      probs = np.exp(digit_logits - digit_logits.max())
      probs /= probs.sum()
      scores.append(float(np.dot(probs, np.arange(5))))
    return scores
