"""An OpenAI-compatible HTTP endpoint (OpenAI, vLLM, SGLang, an NVIDIA NIM, or this project's own
`python -m helpsteer_jax.serve`), called with bounded retries and bounded concurrency.

The API key is read from the environment variable the settings name when the endpoint is built,
and lives only in the request header: it is never logged, written to a record or shown in an
error (a server that echoes it back has it masked). Transient failures (HTTP 408, 409, 429, 5xx,
connection errors, timeouts, a malformed reply) are retried with exponential backoff and jitter,
longer when the server sends `Retry-After`; other HTTP errors fail at once with the status and the
start of the server's message. At most `max_concurrency` calls are in flight at a time, however
many threads call.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import requests

RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx


def endpoint_name(base_url: str, model: str) -> str:
  """What records name a served model by: its URL and model, never the key."""
  return f"openai:{base_url.rstrip('/')}#{model}"


class EndpointError(RuntimeError):
  """A call that failed for good (a non-retryable status, or retries exhausted)."""


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
  base_url: str  # up to and including the version, e.g. "https://api.openai.com/v1"
  model: str
  api_key_env: str = ""  # the variable holding the key; "" = send no Authorization header
  timeout_s: float = 120.0
  max_retries: int = 6
  backoff_s: float = 1.0  # first retry waits about this long, then doubling
  max_backoff_s: float = 60.0
  max_concurrency: int = 8

  def check(self, what: str = "endpoint") -> "EndpointSettings":
    """Raises ValueError naming the first bad field as `<what>.<field>`; returns self."""
    for name, ok, expected in (
      ("base_url", self.base_url.startswith(("http://", "https://")), "an http(s) URL such as https://host/v1"),
      ("model", bool(self.model), "the served model's name"),
      ("timeout_s", self.timeout_s > 0, "> 0"),
      ("max_retries", self.max_retries >= 0, ">= 0"),
      ("backoff_s", self.backoff_s >= 0, ">= 0"),
      ("max_backoff_s", self.max_backoff_s >= 0, ">= 0"),
      ("max_concurrency", self.max_concurrency >= 1, ">= 1"),
    ):
      if not ok:
        raise ValueError(f"{what}.{name}={getattr(self, name)!r}: must be {expected}")
    return self


def _retry_after(response: requests.Response) -> Optional[float]:
  value = response.headers.get("Retry-After")
  try:
    return float(value) if value is not None else None
  except ValueError:
    return None


class Endpoint:
  """POSTs JSON to `settings.base_url` + a route; `what` names the endpoint in errors and logs
  ("the judge", "the feedback model", ...)."""

  def __init__(
    self, settings: EndpointSettings, what: str = "the endpoint", sleep: Callable[[float], None] = time.sleep
  ):
    if not settings.base_url:
      raise ValueError(f"{what} has an empty base_url; expected e.g. https://api.openai.com/v1")
    self.settings, self.what = settings, what
    self.base_url = settings.base_url.rstrip("/")
    self._sleep = sleep
    self._api_key: Optional[str] = None
    if settings.api_key_env:
      self._api_key = os.environ.get(settings.api_key_env)
      if not self._api_key:
        raise ValueError(
          f"the API key variable {settings.api_key_env!r} of {what} is not set "
          "(name no variable, api_key_env='', for an endpoint without authentication)"
        )
    self._session = requests.Session()
    self._lock = threading.Lock()
    self._slots = threading.BoundedSemaphore(settings.max_concurrency)
    self.calls = 0  # HTTP requests sent, retries included
    self.in_flight = 0
    self.most_in_flight = 0

  def __repr__(self) -> str:  # never shows the key
    return f"Endpoint(model={self.settings.model!r}, base_url={self.base_url!r})"

  @property
  def name(self) -> str:
    return endpoint_name(self.base_url, self.settings.model)

  def redact(self, text: str) -> str:
    """Server text with the key masked, should a server ever echo it back."""
    return text.replace(self._api_key, "***") if self._api_key else text

  def _headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    return headers

  def post(self, route: str, payload: dict[str, Any], parse: Callable[[Any], Any] = lambda data: data) -> Any:
    """`parse(reply JSON)` of a successful call; a reply `parse` cannot read (ValueError, KeyError,
    IndexError, TypeError) is retried like a transient failure."""
    s = self.settings
    url = f"{self.base_url}/{route.lstrip('/')}"
    problem = ""
    for attempt in range(s.max_retries + 1):
      wait_hint = None
      with self._slots:
        with self._lock:
          self.calls += 1
          self.in_flight += 1
          self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
          response = self._session.post(url, json=payload, headers=self._headers(), timeout=s.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as e:
          response, problem = None, type(e).__name__
        finally:
          with self._lock:
            self.in_flight -= 1
      if response is not None:
        if response.status_code == 200:
          try:
            return parse(response.json())
          except (ValueError, KeyError, IndexError, TypeError) as e:
            problem = f"a malformed reply ({type(e).__name__}: {e})"
        elif response.status_code in RETRY_STATUS or response.status_code >= 500:
          problem = f"HTTP {response.status_code}"
          wait_hint = _retry_after(response)
        else:
          raise EndpointError(
            f"{self.what} at {url} answered HTTP {response.status_code}: {self.redact(response.text[:300])!r}"
          )
      if attempt == s.max_retries:
        break
      delay = min(s.max_backoff_s, s.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
      if wait_hint is not None:
        delay = max(delay, min(wait_hint, s.max_backoff_s))
      logging.warning(
        "%s call failed (%s); retry %d of %d in %.2fs", self.what, problem, attempt + 1, s.max_retries, delay
      )
      self._sleep(delay)
    raise EndpointError(f"{self.what} at {url} failed {s.max_retries + 1} times; last: {problem}")
