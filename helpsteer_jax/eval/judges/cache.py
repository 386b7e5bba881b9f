"""An on-disk cache of judge replies: a rerun, or a resumed run, repeats no judge call.

Entries are JSON lines `{"key", "model", "text", "top_logprobs"}` appended to one file (fsynced,
so a crash keeps every finished call). The key is the SHA-256 of the canonical JSON of the judge
model's name, the messages and the sampling parameters, so any change of prompt, judge or
parameters misses the cache. Only what determines and what is the reply is stored: never request
headers, endpoints or credentials.

A reply without a usable verdict (empty, or one the benchmark cannot parse: `usable`) is neither
stored nor replayed, so a rerun asks the judge again instead of counting the same failed judgment
forever; such entries left by older runs stay in the file, unread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Optional

from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.eval.judges.base import ChatReply, ChatRequest


def cache_key(model: str, request: ChatRequest) -> str:
  payload = {
    "model": model,
    "messages": [[role, content] for role, content in request.messages],
    "temperature": request.temperature,
    "max_tokens": request.max_tokens,
    "top_logprobs": request.top_logprobs,
  }
  blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def has_text(reply: ChatReply) -> bool:
  """The default test of a usable reply: some text, or log-probabilities to read a choice from."""
  return bool(reply.text) or bool(reply.top_logprobs)


class JudgeCache:
  """Reply cache backed by a JSONL file; the file is read once, then appended to. `usable` tells
  a reply that holds a verdict (the benchmark's parser); others are judged again."""

  def __init__(self, path: str, usable: Callable[[ChatReply], bool] = has_text):
    self._log = JsonlAppender(path)
    self.path = self._log.path
    self.usable = usable
    self._lock = threading.Lock()
    self._entries: dict[str, ChatReply] = {}
    unusable = set()
    for row in self._log.read():
      if isinstance(row, dict) and "key" in row and isinstance(row.get("text"), str):
        reply = ChatReply(row["text"], row.get("top_logprobs"), cached=True)
        if usable(reply):
          self._entries[row["key"]] = reply
        else:
          unusable.add(row["key"])
    if unusable - self._entries.keys():
      logging.info(
        "%s: %d cached replies hold no usable verdict and will be judged again",
        self.path,
        len(unusable - self._entries.keys()),
      )

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, model: str, request: ChatRequest) -> Optional[ChatReply]:
    with self._lock:
      return self._entries.get(cache_key(model, request))

  def put(self, model: str, request: ChatRequest, reply: ChatReply) -> None:
    if not self.usable(reply):
      return  # asked again next time rather than replayed as the same failure
    key = cache_key(model, request)
    with self._lock:
      if key in self._entries:
        return
      self._entries[key] = ChatReply(reply.text, reply.top_logprobs, cached=True)
    self._log.append([{"key": key, "model": model, "text": reply.text, "top_logprobs": reply.top_logprobs}])


class CachedChatJudge:
  """Any `ChatJudge` behind a `JudgeCache`: only requests never seen before reach the judge."""

  def __init__(self, judge, cache: JudgeCache):
    self.judge = judge
    self.cache = cache
    self.name = judge.name

  def chat(self, requests):
    replies: list[Optional[ChatReply]] = [self.cache.get(self.name, r) for r in requests]
    todo = [i for i, reply in enumerate(replies) if reply is None]
    if todo:
      fresh = self.judge.chat([requests[i] for i in todo])
      for i, reply in zip(todo, fresh):
        self.cache.put(self.name, requests[i], reply)
        replies[i] = reply
    return replies
