"""A judge behind any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, SGLang, ...).

The API key is read from the environment variable named in the config when the judge is built and
lives only in the request header: it is never logged, cached, written to results or shown in an
error. Transient failures (HTTP 429, 5xx, connection errors, timeouts) are retried with
exponential backoff and jitter (longer when the server sends `Retry-After`); other HTTP errors
fail at once with the status and the start of the server's message. Requests run concurrently on
a thread pool, and each finished reply enters the cache immediately, so an interrupted run pays
again only for the calls in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import requests

from helpsteer_jax.eval.judges.base import ChatReply, ChatRequest
from helpsteer_jax.eval.judges.cache import JudgeCache

RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx


class JudgeError(RuntimeError):
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


def _retry_after(response: requests.Response) -> Optional[float]:
  value = response.headers.get("Retry-After")
  try:
    return float(value) if value is not None else None
  except ValueError:
    return None


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
    self.url = settings.base_url.rstrip("/") + "/chat/completions"
    self._sleep = sleep
    self._api_key: Optional[str] = None
    if settings.api_key_env:
      self._api_key = os.environ.get(settings.api_key_env)
      if not self._api_key:
        raise ValueError(
          f"the judge's API key variable {settings.api_key_env!r} is not set "
          "(set judge.api_key_env='' for an endpoint without authentication)"
        )
    self._session = requests.Session()
    self._lock = threading.Lock()
    self.calls = 0  # HTTP requests sent, retries included
    logging.info("HTTP judge %s at %s", settings.model, self.url)

  def __repr__(self) -> str:  # never shows the key
    return f"HttpJudge(model={self.name!r}, url={self.url!r})"

  def _redact(self, text: str) -> str:
    """Server text with the key masked, should a server ever echo it back."""
    return text.replace(self._api_key, "***") if self._api_key else text

  def _headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    return headers

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
    s = self.settings
    payload = self._payload(request)
    problem = ""
    for attempt in range(s.max_retries + 1):
      wait_hint = None
      try:
        with self._lock:
          self.calls += 1
        response = self._session.post(self.url, json=payload, headers=self._headers(), timeout=s.timeout_s)
      except (requests.ConnectionError, requests.Timeout) as e:
        problem = f"{type(e).__name__}"
      else:
        if response.status_code == 200:
          try:
            reply = _parse_reply(response.json())
          except (ValueError, KeyError, IndexError, TypeError) as e:
            problem = f"a malformed reply ({type(e).__name__}: {e})"
          else:
            if self.cache is not None:
              self.cache.put(self.name, request, reply)
            return reply
        elif response.status_code in RETRY_STATUS or response.status_code >= 500:
          problem = f"HTTP {response.status_code}"
          wait_hint = _retry_after(response)
        else:
          raise JudgeError(
            f"the judge at {self.url} answered HTTP {response.status_code}: {self._redact(response.text[:300])!r}"
          )
      if attempt == s.max_retries:
        break
      delay = min(s.max_backoff_s, s.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
      if wait_hint is not None:
        delay = max(delay, min(wait_hint, s.max_backoff_s))
      logging.warning("judge call failed (%s); retry %d of %d in %.2fs", problem, attempt + 1, s.max_retries, delay)
      self._sleep(delay)
    raise JudgeError(f"the judge at {self.url} failed {s.max_retries + 1} times; last: {problem}")

  def chat(self, batch: Sequence[ChatRequest]) -> list[ChatReply]:
    if len(batch) <= 1 or self.settings.max_workers <= 1:
      return [self._call(r) for r in batch]
    with ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
      return list(pool.map(self._call, batch))
