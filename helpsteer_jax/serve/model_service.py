"""What one served model answers: prompts encoded as `hj.generate` encodes them, sampled on the
engine the loop steps, decoded and cut at the request's stop strings.

A request's samples draw from the key of (seed, 0), the key `hj.generate` gives the first
conversation of a call: with a seed, the server's answer equals the in-process one, whatever else
the engine decodes beside it. Without a seed the server draws one.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Optional

from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.generate import encode_conversations, sampling_settings
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.settings import SamplingSettings
from helpsteer_jax.serve.engine_loop import EngineLoop
from helpsteer_jax.serve.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, ServeError


@dataclasses.dataclass(frozen=True)
class Choice:
  index: int
  text: str
  tokens: int  # generated, stop token excluded
  finish_reason: str  # "stop" (a stop token or string) or "length"


@dataclasses.dataclass(frozen=True)
class Job:
  """A request checked and encoded, ready for the engine."""

  prompt: list[int]
  settings: SamplingSettings
  n: int
  seed: int
  stops: tuple[str, ...]


class ModelService:
  def __init__(
    self,
    name: str,
    model: Llama,
    tokenizer: Any,
    loop: EngineLoop,
    num_slots: int,
    default_max_tokens: int = 256,
    engine: Optional[Engine] = None,
  ):
    """`engine`: one over `model` to share (the search's policy engine, when the search is served
    beside its policy); by default its own of `num_slots` slots."""
    if tokenizer is None:
      raise ValueError(f"model {name!r} has no tokenizer; the server needs one to read and write text")
    self.name = name
    self.tokenizer = tokenizer
    self.default_max_tokens = default_max_tokens
    self.context = model.config.max_position_embeddings
    self._base = sampling_settings(tokenizer)
    if engine is not None and engine.model is not model:
      raise ValueError(f"the engine given to model {name!r} decodes another model")
    self.engine = engine or Engine(
      model, EngineSettings(num_slots=num_slots, stop_token_ids=self._base.stop_token_ids, pad_id=self._base.pad_id)
    )
    self._loop = loop
    loop.add_engine(self.engine)

  def chat_job(self, request: ChatCompletionRequest) -> Job:
    conversation = [{"role": m.role, "content": m.content} for m in request.messages]
    return self._job(encode_conversations(self.tokenizer, [conversation])[0], request, "messages")

  def completion_job(self, request: CompletionRequest) -> Job:
    return self._job(list(self.tokenizer.encode(request.prompt)), request, "prompt")

  def _job(self, prompt: list[int], request: SamplingFields, field: str) -> Job:
    max_tokens = request.token_limit(self.default_max_tokens)
    if len(prompt) + max_tokens > self.context:
      raise ServeError(
        400,
        f"the {field} take {len(prompt)} tokens and max_tokens is {max_tokens}: "
        f"{len(prompt) + max_tokens} tokens, over this model's context of {self.context}",
        param=field,
        code="context_length_exceeded",
      )
    settings = dataclasses.replace(
      self._base,
      max_new_tokens=max_tokens,
      temperature=request.temperature,
      top_p=None if request.top_p >= 1.0 else request.top_p,
    )
    seed = request.seed if request.seed is not None else secrets.randbits(31)
    return Job(prompt, settings, request.n, seed, tuple(request.stop_sequences()))

  def start(self, job: Job, on_choice: Optional[Callable[[Choice], None]] = None, request_id: str = ""):
    """The job's n choices as a future; `on_choice` (called on the loop's thread) gets each as its
    sample finishes."""

    def start_on_loop(done, fail) -> None:
      def on_sample(request: Request, index: int, tokens: list[int]) -> None:
        if on_choice is not None:
          on_choice(self.choice(job, index, tokens))

      def on_done(request: Request, samples: list[list[int]]) -> None:
        done([self.choice(job, i, tokens) for i, tokens in enumerate(samples)])

      self.engine.submit(
        Request(
          job.prompt, job.settings, sample_key(job.seed, 0), n=job.n, tag="serve", on_done=on_done, on_sample=on_sample
        )
      )

    return self._loop.submit(start_on_loop)

  def usage(self, job: Job, choices: list[Choice], request_id: str) -> dict[str, Any]:
    completion = sum(c.tokens for c in choices)
    return {
      "prompt_tokens": len(job.prompt),
      "completion_tokens": completion,
      "total_tokens": len(job.prompt) + completion,
    }

  def choice(self, job: Job, index: int, tokens: Sequence[int]) -> Choice:
    text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
    cut = min((i for i in (text.find(s) for s in job.stops) if i >= 0), default=-1)
    if cut >= 0:
      return Choice(index, text[:cut], len(tokens), "stop")
    return Choice(index, text, len(tokens), "length" if len(tokens) >= job.settings.max_new_tokens else "stop")
