"""Serve a model over OpenAI's API: `python -m helpsteer_jax.serve --model=PATH|embedded --port=N`.

Routes: POST /v1/chat/completions and /v1/completions (n, max_tokens, temperature, top_p, stop,
seed, stream, usage), GET /v1/models and /health. Concurrent requests are batched into one decode
engine; past --max_open_requests open requests, a request gets 429. SIGTERM (or Ctrl-C) stops
taking requests, lets the open ones finish for up to --graceful_shutdown_s, then fails the rest.
"""

from __future__ import annotations

import logging
import os

import uvicorn
from absl import app, flags

from helpsteer_jax import entry_point
from helpsteer_jax.checkpoints.model_pool import ModelPool, resolve_path
from helpsteer_jax.serve.app import create_app
from helpsteer_jax.serve.engine_loop import EngineLoop
from helpsteer_jax.serve.model_service import ModelService

_MODEL = flags.DEFINE_string("model", "embedded", "HF checkpoint folder, .gguf file, or `embedded` (SmolLM2).")
_NAME = flags.DEFINE_string("served_model_name", None, "The model's name in requests; default: the folder name.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_SLOTS = flags.DEFINE_integer("num_slots", 16, "Decode engine slots: samples decoded at once.")
_MAX_OPEN = flags.DEFINE_integer("max_open_requests", 64, "Open requests past which a new one gets 429.")
_MAX_TOKENS = flags.DEFINE_integer("default_max_tokens", 256, "max_tokens of a request that sets none.")
_GRACE = flags.DEFINE_float("graceful_shutdown_s", 30.0, "On SIGTERM, how long open requests may finish.")


def _served_name(path: str) -> str:
  if _NAME.value:
    return _NAME.value
  if _MODEL.value == "embedded":
    return "embedded"
  return os.path.basename(os.path.normpath(path))


def main(argv):
  del argv
  for flag, value in (
    ("num_slots", _SLOTS.value),
    ("max_open_requests", _MAX_OPEN.value),
    ("default_max_tokens", _MAX_TOKENS.value),
  ):
    if value < 1:
      raise app.UsageError(f"--{flag}={value}; expected at least 1")
  if not 0 <= _PORT.value < 65536:
    raise app.UsageError(f"--port={_PORT.value}; expected 0-65535")
  path = resolve_path(_MODEL.value)
  try:
    model, tokenizer = ModelPool().causal_lm(path)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  loop = EngineLoop(max_open=_MAX_OPEN.value)
  name = _served_name(path)
  service = ModelService(name, model, tokenizer, loop, num_slots=_SLOTS.value, default_max_tokens=_MAX_TOKENS.value)
  logging.getLogger("uvicorn.error").info("serving %s as %r on http://%s:%d", path, name, _HOST.value, _PORT.value)
  uvicorn.run(
    create_app({name: service}, loop),
    host=_HOST.value,
    port=_PORT.value,
    log_level="info",
    timeout_graceful_shutdown=int(_GRACE.value),
  )


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
