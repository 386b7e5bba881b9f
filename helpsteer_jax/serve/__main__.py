"""Serve a model, and the search, over OpenAI's API:

    python -m helpsteer_jax.serve --model=PATH|embedded --port=N
    python -m helpsteer_jax.serve --search_config=experiments/scaling/smollm2_self_feedback_edit.py

Routes: POST /v1/chat/completions and /v1/completions (n, max_tokens, temperature, top_p, stop,
seed, stream, usage), GET /v1/models and /health. Concurrent requests are batched into one decode
engine; past --max_open_requests open requests, a request gets 429. SIGTERM (or Ctrl-C) stops
taking requests, lets the open ones finish for up to --graceful_shutdown_s, then fails the rest.

With --search_config, a chat request to the config's `served_model_name` (default `feedback-edit`)
runs the whole search for its conversation on the search's engines (serve/search_service.py) and
its tree is kept at GET /v1/search_records/{completion id}. --model then serves a plain model
beside it (sharing the engine when it is the search's policy); without --model only the search is
served.
"""

from __future__ import annotations

import logging
import os

import uvicorn
from absl import app, flags
from ml_collections import config_flags

from helpsteer_jax import entry_point
from helpsteer_jax.checkpoints.model_pool import ModelPool, resolve_path
from helpsteer_jax.scaling.run import build_search
from helpsteer_jax.serve.app import Service, create_app
from helpsteer_jax.serve.engine_loop import EngineLoop
from helpsteer_jax.serve.model_service import ModelService
from helpsteer_jax.serve.search_service import SearchRecords, SearchService

_MODEL = flags.DEFINE_string(
  "model", None, "HF checkpoint folder, .gguf file, or `embedded` (SmolLM2); default: embedded without a search."
)
_SEARCH = config_flags.DEFINE_config_file("search_config", None, "A scaling experiment to serve as a model.")
_RECORDS = flags.DEFINE_string("search_records", "", "A JSON-lines file each served search tree is appended to.")
_KEEP = flags.DEFINE_integer("kept_search_records", 1024, "Search trees kept in memory for /v1/search_records.")
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
  if _MODEL.value in (None, "embedded"):
    return "embedded"
  return os.path.basename(os.path.normpath(path))


def main(argv):
  del argv
  for flag, value in (
    ("num_slots", _SLOTS.value),
    ("max_open_requests", _MAX_OPEN.value),
    ("default_max_tokens", _MAX_TOKENS.value),
    ("kept_search_records", _KEEP.value),
  ):
    if value < 1:
      raise app.UsageError(f"--{flag}={value}; expected at least 1")
  if not 0 <= _PORT.value < 65536:
    raise app.UsageError(f"--port={_PORT.value}; expected 0-65535")
  config = _SEARCH.value
  log = logging.getLogger("uvicorn.error")
  loop = EngineLoop(max_open=_MAX_OPEN.value)
  services: dict[str, Service] = {}
  records = SearchRecords(_KEEP.value, _RECORDS.value)
  try:
    pool = ModelPool(config.mesh if config is not None else None)
    search = None
    if config is not None:
      search = build_search(config, pool)
      name = config.served_model_name
      services[name] = SearchService(name, search, loop, records)
      log.info("serving the %s search of %s as %r", config.search.mode, search.policy.name, name)
    if _MODEL.value is not None or config is None:
      path = resolve_path(_MODEL.value or "embedded")
      model, tokenizer = pool.causal_lm(path)
      name = _served_name(path)
      if name in services:
        raise app.UsageError(f"--served_model_name={name!r} is the search's name too")
      # The search's policy engine decodes plain requests too when it is this very model.
      shared = search.engine(search.policy) if search is not None and search.policy.model is model else None
      services[name] = ModelService(
        name, model, tokenizer, loop, num_slots=_SLOTS.value, default_max_tokens=_MAX_TOKENS.value, engine=shared
      )
      log.info("serving %s as %r", path, name)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  log.info("listening on http://%s:%d", _HOST.value, _PORT.value)
  uvicorn.run(
    create_app(services, loop, records),
    host=_HOST.value,
    port=_PORT.value,
    log_level="info",
    timeout_graceful_shutdown=int(_GRACE.value),
  )


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
