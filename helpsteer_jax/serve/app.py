"""The HTTP routes (FastAPI): /v1/chat/completions, /v1/completions, /v1/models, /health, and
/v1/search_records/{id} for the tree of a request to a served search (serve/search_service.py).

Requests are checked before any engine work: a bad field, an unknown model or a prompt over the
context gets a 4xx with OpenAI's error body naming the field. Past the loop's bound of open
requests a request gets 429 at once. A streamed response sends each choice as its sample finishes
(the engine decodes several tokens per program call, so a choice arrives whole), then the finish
reasons, the usage when asked, and `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Optional, Protocol, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from helpsteer_jax.serve.engine_loop import Closing, EngineLoop, Overloaded
from helpsteer_jax.serve.model_service import Choice
from helpsteer_jax.serve.protocol import (
  ChatCompletionRequest,
  CompletionRequest,
  ServeError,
  error_body,
  new_id,
  now,
)

OWNER = "helpsteer_jax"


class Service(Protocol):
  """A served model: the plain engine (serve/model_service.py) or the search (serve/search_service.py)."""

  name: str

  def chat_job(self, request: ChatCompletionRequest) -> Any: ...

  def completion_job(self, request: CompletionRequest) -> Any: ...

  def start(self, job: Any, on_choice: Optional[Callable[[Choice], None]] = None, request_id: str = ""): ...

  def usage(self, job: Any, choices: list[Choice], request_id: str) -> dict[str, Any]: ...


class RecordStore(Protocol):
  def get(self, record_id: str) -> Optional[dict[str, Any]]: ...


def _validation_error(error: RequestValidationError) -> JSONResponse:
  first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request", "type": ""}
  if first.get("type") == "json_invalid":
    return JSONResponse(error_body(f"the body is not valid JSON: {first.get('msg')}"), status_code=400)
  loc = [str(part) for part in first.get("loc", ()) if part != "body"]
  param = ".".join(loc) or None
  return JSONResponse(error_body(f"{param or 'body'}: {first.get('msg')}", param=param), status_code=400)


def create_app(services: dict[str, Service], loop: EngineLoop, records: Optional[RecordStore] = None) -> FastAPI:
  """The app over `services` (by served model name), whose engines `loop` steps; the app starts
  the loop and closes it at shutdown (open requests finish first: uvicorn waits for them).
  `records`: the served search's trees, by completion id."""

  @contextlib.asynccontextmanager
  async def lifespan(app: FastAPI):
    loop.start()
    yield
    loop.close(cancel=True, timeout=10)

  app = FastAPI(title="helpsteer_jax", lifespan=lifespan)

  @app.exception_handler(RequestValidationError)
  async def on_validation_error(request: Request, error: RequestValidationError):
    return _validation_error(error)

  @app.exception_handler(ServeError)
  async def on_serve_error(request: Request, error: ServeError):
    return JSONResponse(error.body(), status_code=error.status)

  @app.get("/health")
  async def health():
    if not loop.healthy:
      return JSONResponse({"status": "unavailable"}, status_code=503)
    return {"status": "ok", "open_requests": loop.open_jobs}

  @app.get("/v1/models")
  async def models():
    return {
      "object": "list",
      "data": [{"id": name, "object": "model", "created": 0, "owned_by": OWNER} for name in services],
    }

  @app.get("/v1/search_records/{record_id}")
  async def search_record(record_id: str):
    record = records.get(record_id) if records is not None else None
    if record is None:
      raise ServeError(404, f"no search record {record_id!r} is kept here", param="id", code="record_not_found")
    return record

  def service_of(name: str) -> Service:
    if name not in services:
      raise ServeError(
        404, f"model {name!r} is not served here; served: {sorted(services)}", param="model", code="model_not_found"
      )
    return services[name]

  @app.post("/v1/chat/completions")
  async def chat_completions(body: ChatCompletionRequest):
    service = service_of(body.model)
    job = service.chat_job(body)
    return await _respond(service, job, body.stream, _include_usage(body), chat=True)

  @app.post("/v1/completions")
  async def completions(body: CompletionRequest):
    service = service_of(body.model)
    job = service.completion_job(body)
    return await _respond(service, job, body.stream, _include_usage(body), chat=False)

  return app


def _include_usage(body: Union[ChatCompletionRequest, CompletionRequest]) -> bool:
  return bool(body.stream_options and body.stream_options.include_usage)


def _start(service: Service, job, request_id: str, on_choice=None):
  try:
    return service.start(job, on_choice, request_id)
  except Overloaded as e:
    raise ServeError(429, str(e), kind="rate_limit_error", code="overloaded") from None
  except Closing as e:
    raise ServeError(503, str(e), kind="server_error", code="unavailable") from None


async def _respond(service: Service, job, stream: bool, include_usage: bool, chat: bool):
  created, rid = now(), new_id("chatcmpl" if chat else "cmpl")
  if not stream:
    choices = await asyncio.wrap_future(_start(service, job, rid))
    return {
      "id": rid,
      "object": "chat.completion" if chat else "text_completion",
      "created": created,
      "model": service.name,
      "choices": [_full_choice(c, chat) for c in choices],
      "usage": service.usage(job, choices, rid),
    }
  events: asyncio.Queue = asyncio.Queue()
  running = asyncio.get_running_loop()
  future = _start(service, job, rid, lambda choice: running.call_soon_threadsafe(events.put_nowait, choice))
  return StreamingResponse(
    _stream(service, job, rid, created, future, events, include_usage, chat), media_type="text/event-stream"
  )


def _full_choice(choice: Choice, chat: bool) -> dict[str, Any]:
  if chat:
    return {
      "index": choice.index,
      "message": {"role": "assistant", "content": choice.text},
      "finish_reason": choice.finish_reason,
      "logprobs": None,
    }
  return {"index": choice.index, "text": choice.text, "finish_reason": choice.finish_reason, "logprobs": None}


async def _stream(service, job, rid, created, future, events, include_usage, chat) -> AsyncIterator[str]:
  kind = "chat.completion.chunk" if chat else "text_completion"

  def chunk(choices: list[dict[str, Any]], **extra) -> str:
    body = {"id": rid, "object": kind, "created": created, "model": service.name, "choices": choices, **extra}
    return f"data: {json.dumps(body)}\n\n"

  def piece(index: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
    if chat:
      delta: dict[str, Any] = {"role": "assistant"} if role else {}
      if text is not None:
        delta["content"] = text
      return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

  if chat:
    yield chunk([piece(i, "", None, role=True) for i in range(job.n)])
  seen: list[Choice] = []
  waiter = asyncio.wrap_future(future)
  while len(seen) < job.n:
    if waiter.done():
      if waiter.exception() is not None:
        yield f"data: {json.dumps(error_body(str(waiter.exception()), kind='server_error'))}\n\n"
        return
      # Each choice was queued before the job finished (both hand-offs keep the loop thread's
      # order), so the rest are waiting.
      choice = events.get_nowait()
    else:
      getter = asyncio.ensure_future(events.get())
      done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
      if getter not in done:
        getter.cancel()  # an item it had not taken stays in the queue
        continue
      choice = getter.result()
    seen.append(choice)
    yield chunk([piece(choice.index, choice.text, None)])
    yield chunk([piece(choice.index, None if chat else "", choice.finish_reason)])
  if include_usage:
    yield chunk([], usage=service.usage(job, seen, rid))
  yield "data: [DONE]\n\n"
