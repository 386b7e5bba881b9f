"""Judges run on local models: a generative judge (writes the benchmark's judgment text with the
project's sampler) and a score judge (a reward model, or the policy's 0-4 helpfulness digit).

They make the evaluation usable without an API: the generative judge reads the same judge prompts
as an HTTP judge, so a strong local instruct model can stand in for it; the score judge is the
cheap, deterministic option that ranks answers the way the scaling search's selector does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from helpsteer_jax.eval.judges.base import ChatReply, ChatRequest
from helpsteer_jax.formats.messages import Conversation


class GenerativeJudge:
  """`ChatJudge` on a local causal LM; requests sharing sampling parameters are batched."""

  def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 8, seed: int = 0):
    self.model, self.tokenizer, self.name = model, tokenizer, name
    self.batch_size, self.seed = batch_size, seed

  def _fits(self, request: ChatRequest) -> bool:
    from helpsteer_jax.sampling.generate import encode_conversations

    length = len(encode_conversations(self.tokenizer, [request.message_dicts()])[0])
    return length + request.max_tokens <= self.model.config.max_position_embeddings

  def chat(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
    from helpsteer_jax.sampling.generate import generate_samples, sampling_settings

    replies: list[ChatReply] = [ChatReply("")] * len(requests)
    groups: dict[tuple[float, int], list[int]] = {}
    for i, request in enumerate(requests):
      if self._fits(request):
        groups.setdefault((request.temperature, request.max_tokens), []).append(i)
      else:
        # An over-long judge prompt gets an empty judgment, which parses as a failed judgment
        # and is counted as such, instead of stopping the whole evaluation.
        logging.warning("judge prompt %d does not fit the judge's context; judgment left empty", i)
    for (temperature, max_tokens), members in groups.items():
      settings = sampling_settings(self.tokenizer, max_new_tokens=max_tokens, temperature=temperature)
      samples = generate_samples(
        self.model,
        self.tokenizer,
        [requests[i].message_dicts() for i in members],
        settings,
        n=1,
        seed=self.seed,
        batch_size=self.batch_size,
      )
      for i, per_request in zip(members, samples):
        replies[i] = ChatReply(per_request[0].text)
    return replies


class RewardModelJudge:
  """`ScoreJudge` over a scaling-search selector (anything with `score([(conv, response)])`)."""

  def __init__(self, selector: Any, name: str):
    self.selector, self.name = selector, name

  @classmethod
  def from_reward_model(cls, model: Any, tokenizer: Any, name: str, batch_size: int = 8) -> "RewardModelJudge":
    """A reward model with a scalar head (first output used)."""
    from helpsteer_jax.scoring.selectors import RewardModelSelector

    return cls(RewardModelSelector(model, tokenizer, batch_size=batch_size), name)

  @classmethod
  def from_policy(cls, model: Any, tokenizer: Any, name: str, batch_size: int = 8) -> "RewardModelJudge":
    """An instruct model's expected 0-4 helpfulness digit, for when no reward model is at hand."""
    from helpsteer_jax.scoring.selectors import GenerativeJudgeSelector

    return cls(GenerativeJudgeSelector(model, tokenizer, batch_size=batch_size), name)

  def score(self, conversations: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
    if len(conversations) != len(responses):
      raise ValueError(f"score: {len(conversations)} conversations but {len(responses)} responses")
    return [float(s) for s in self.selector.score(list(zip(conversations, responses)))]
