"""A judge behind any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, SGLang, ...).

The calls go through `remote/endpoint.py`: the API key is read from the environment variable named
in the config when the judge is built and lives only in the request header; transient failures
are retried with backoff; other HTTP errors fail at once. Requests run concurrently on a thread
pool, and each finished reply enters the cache immediately, so an interrupted run pays again only
for the calls in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from helpsteer_jax.eval.judges.base import ChatReply, ChatRequest
from helpsteer_jax.eval.judges.cache import JudgeCache
from helpsteer_jax.remote.endpoint import Endpoint, EndpointError, EndpointSettings


class JudgeError(EndpointError):
  """A judge call that failed for good (a non-retryable status, or retries exhausted)."""


@dataclasses.dataclass(frozen=True)
class HttpJudgeSettings:
  base_url: str  # up to and including the version, e.g. "https://api.openai.com/v1"
  model: str
  api_key_env: str = "OPENAI_API_KEY"  # "" = send no Authorization header (local servers)
  timeout_s: float = 120.0
  max_retries: int = 6
  backoff_s: float = 1.0  # first retry waits about this long, then doubling
  max_backoff_s: float = 60.0
  max_workers: int = 8

  def __post_init__(self):
    # Settings built without the evaluation config's check (eval/config.py) fail here, not as
    # "failed 0 times" after a negative retry count or inside requests after a zero timeout.
    for name, ok, expected in (
      ("timeout_s", self.timeout_s > 0, "> 0"),
      ("max_retries", self.max_retries >= 0, ">= 0"),
      ("backoff_s", self.backoff_s >= 0, ">= 0"),
      ("max_backoff_s", self.max_backoff_s >= 0, ">= 0"),
      ("max_workers", self.max_workers >= 1, ">= 1"),
    ):
      if not ok:
        raise ValueError(f"judge.{name}={getattr(self, name)!r}: must be {expected}")

  def endpoint(self) -> EndpointSettings:
    return EndpointSettings(
      self.base_url,
      self.model,
      self.api_key_env,
      self.timeout_s,
      self.max_retries,
      self.backoff_s,
      self.max_backoff_s,
      max_concurrency=self.max_workers,
    )


def _parse_reply(data: Any) -> ChatReply:
  choice = data["choices"][0]
  text = choice["message"].get("content") or ""
  top = None
  logprobs = choice.get("logprobs") or {}
  if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
    top = []
    for token in logprobs["content"]:
      alternatives = {alt["token"]: float(alt["logprob"]) for alt in token.get("top_logprobs") or []}
      alternatives.setdefault(token["token"], float(token["logprob"]))
      top.append(alternatives)
  return ChatReply(str(text), top)


class HttpJudge:
  """`ChatJudge` over HTTP; `name` is the judge model's name."""

  def __init__(self, settings: HttpJudgeSettings, cache: Optional[JudgeCache] = None, sleep=time.sleep):
    if not settings.base_url:
      raise ValueError("judge.base_url is empty; expected e.g. https://api.openai.com/v1")
    self.settings = settings
    self.name = settings.model
    self.cache = cache
    self.endpoint = Endpoint(settings.endpoint(), what="the judge", sleep=sleep)
    self.url = self.endpoint.base_url + "/chat/completions"
    logging.info("HTTP judge %s at %s", settings.model, self.url)

  def __repr__(self) -> str:  # never shows the key
    return f"HttpJudge(model={self.name!r}, url={self.url!r})"

  @property
  def calls(self) -> int:
    """HTTP requests sent, retries included."""
    return self.endpoint.calls

  def _payload(self, request: ChatRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
      "model": self.settings.model,
      "messages": request.message_dicts(),
      "temperature": request.temperature,
      "max_tokens": request.max_tokens,
    }
    if request.top_logprobs:
      payload["logprobs"] = True
      payload["top_logprobs"] = request.top_logprobs
    return payload

  def _call(self, request: ChatRequest) -> ChatReply:
    if self.cache is not None:
      hit = self.cache.get(self.name, request)
      if hit is not None:
        return hit
    try:
      reply = self.endpoint.post("chat/completions", self._payload(request), parse=_parse_reply)
    except EndpointError as e:
      raise JudgeError(str(e)) from None
    if self.cache is not None:
      self.cache.put(self.name, request, reply)
    return reply

  def chat(self, batch: Sequence[ChatRequest]) -> list[ChatReply]:
    if len(batch) <= 1 or self.settings.max_workers <= 1:
      return [self._call(r) for r in batch]
    with ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
      return list(pool.map(self._call, batch))
