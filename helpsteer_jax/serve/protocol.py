"""The request and response records of the OpenAI API routes the server answers, and its errors.

The request fields follow OpenAI's chat completions and (legacy) completions APIs, limited to what
the engine does: `n`, `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `stop`,
`seed`, `stream` and `stream_options.include_usage`. Fields the engine cannot honour (`logprobs`,
`echo`, `tools`, a non-zero `presence_penalty`, ...) are refused by name rather than ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Past this, one request would hold most of an engine's slots.
MAX_N = 64
MAX_STOP_SEQUENCES = 4  # OpenAI's limit


class ChatMessage(BaseModel):
  role: Literal["system", "user", "assistant"]
  content: str


class StreamOptions(BaseModel):
  include_usage: bool = False


class SamplingFields(BaseModel):
  """What both completion routes share. Unknown fields are refused (`extra="forbid"`): a client
  asking for something the engine does not do learns it from the error, naming the field."""

  model_config = ConfigDict(extra="forbid")

  model: str
  n: int = Field(1, ge=1, le=MAX_N)
  max_tokens: Optional[int] = Field(None, ge=1)
  max_completion_tokens: Optional[int] = Field(None, ge=1)
  temperature: float = Field(1.0, ge=0.0, le=2.0)
  top_p: float = Field(1.0, gt=0.0, le=1.0)
  stop: Optional[Union[str, list[str]]] = None
  seed: Optional[int] = Field(None, ge=0, lt=2**32)
  stream: bool = False
  stream_options: Optional[StreamOptions] = None
  user: Optional[str] = None  # accepted and unused, as many clients send it
  # Defaults that clients send explicitly; any other value is refused.
  frequency_penalty: Optional[float] = Field(None, ge=0.0, le=0.0)
  presence_penalty: Optional[float] = Field(None, ge=0.0, le=0.0)

  @field_validator("stop")
  @classmethod
  def _check_stop(cls, value):
    stops = [value] if isinstance(value, str) else (value or [])
    if len(stops) > MAX_STOP_SEQUENCES:
      raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s for s in stops):
      raise ValueError("a stop sequence is empty")
    return value

  def stop_sequences(self) -> list[str]:
    return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

  def token_limit(self, default: int) -> int:
    if self.max_completion_tokens is not None:
      return self.max_completion_tokens
    return self.max_tokens if self.max_tokens is not None else default


class ChatCompletionRequest(SamplingFields):
  messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(SamplingFields):
  prompt: str = Field(min_length=1)


def new_id(prefix: str) -> str:
  return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
  return int(time.time())


def error_body(
  message: str, kind: str = "invalid_request_error", param: Optional[str] = None, code: Optional[str] = None
) -> dict[str, Any]:
  """OpenAI's error shape: the client raises it with `message`, `type`, `param` and `code`."""
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ServeError(Exception):
  """A request the server refuses: an HTTP status and OpenAI's error fields."""

  def __init__(
    self,
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: Optional[str] = None,
    code: Optional[str] = None,
  ):
    super().__init__(message)
    self.status, self.kind, self.param, self.code = status, kind, param, code

  def body(self) -> dict[str, Any]:
    return error_body(str(self), self.kind, self.param, self.code)
