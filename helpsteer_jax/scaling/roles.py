"""A model playing one role of the search, and the requests it sends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Optional

from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.sampling.chunked_prefill import breaks_for
from helpsteer_jax.sampling.engine import EarlyStop, Request
from helpsteer_jax.sampling.generate import Sample, encode_conversations, sampling_settings, to_sample
from helpsteer_jax.scaling.search_settings import StageSampling
from helpsteer_jax.scoring.selectors import model_key_of


@dataclasses.dataclass
class Role:
  """A model playing one role of the search (policy, feedback, edit) in its prompt layout.
  `model_key` names the model: roles with one key share its decode engine (the checkpoint's key
  when loaded from a config; by default the object's). `model` is None while its stage is not
  running under the staged schedule."""

  name: str
  model: Any
  tokenizer: Any
  prompt_format: str = "plain"
  model_key: str = ""
  remote = False  # a model behind an HTTP endpoint is scaling/remote_roles.RemoteRole
  served_by = "local"  # what the records name the role's endpoint by

  def __post_init__(self):
    if not self.model_key:
      if self.model is None:
        raise ValueError(f"role {self.name!r} has neither a model nor a model_key")
      self.model_key = model_key_of(self.model)

  def encode(self, conversation: Conversation) -> list[int]:
    """The prompt ids this role's requests send for `conversation`."""
    return encode_conversations(self.tokenizer, [conversation])[0]

  def request(
    self,
    conversation: Conversation,
    stage: StageSampling,
    n: int,
    key,
    tag: str,
    on_done,
    greedy: bool = False,
    on_sample=None,
    priority: int = 0,
    prefixes: Sequence[Sequence[int]] = (),
    indices: Sequence[int] = (),
    stop_when: Optional[Callable[[str], bool]] = None,
    stop_check_tokens: int = 0,
  ) -> Request:
    """A request whose callbacks receive `Sample`s: `on_done(samples)`, `on_sample(j, sample)`
    with j the sample's index among the n (of `indices`, when given: only those samples). Its
    prefill chunks break where the prompt stops matching one of `prefixes`
    (scaling/prefix_breaks.py). With `stop_when`, a sample whose text after `stop_check_tokens`
    tokens satisfies it ends there (its `Sample.stopped_early` set)."""
    settings = sampling_settings(
      self.tokenizer,
      max_new_tokens=stage.max_new_tokens,
      temperature=0.0 if greedy else stage.temperature,
      top_k=None if greedy else stage.top_k,
      top_p=None if greedy else stage.top_p,
    )
    prompt = self.encode(conversation)
    indices = tuple(indices)

    def sample(request: Request, j: int, tokens: list[int]) -> Sample:
      out = to_sample(self.tokenizer, tokens, settings)
      return dataclasses.replace(out, finished=False, stopped_early=True) if j in request.stopped_early else out

    index = (lambda j: indices[j]) if indices else (lambda j: j)
    early_stop = None
    if stop_when is not None:
      decode = lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=True)
      early_stop = EarlyStop(stop_check_tokens, lambda tokens: stop_when(decode(tokens)))
    return Request(
      prompt,
      settings,
      key,
      n=len(indices) or n,
      tag=tag,
      priority=priority,
      prefill_breaks=breaks_for(prompt, prefixes),
      sample_indices=indices,
      early_stop=early_stop,
      on_done=None
      if on_done is None
      else lambda request, tokens: on_done([sample(request, j, t) for j, t in enumerate(tokens)]),
      on_sample=None
      if on_sample is None
      else lambda request, j, tokens: on_sample(index(j), sample(request, j, tokens)),
    )
