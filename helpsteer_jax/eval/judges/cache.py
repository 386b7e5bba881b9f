"""An on-disk cache of judge replies: a rerun, or a resumed run, repeats no judge call.

Entries are JSON lines `{"key", "model", "text", "top_logprobs"}` appended to one file (fsynced,
so a crash keeps every finished call). The key is the SHA-256 of the canonical JSON of the judge
model's name, the messages and the sampling parameters, so any change of prompt, judge or
parameters misses the cache. Only what determines and what is the reply is stored: never request
headers, endpoints or credentials.
"""

from __future__ import annotations

import hashlib
import json
import threading
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


class JudgeCache:
  """Reply cache backed by a JSONL file; the file is read once, then appended to."""

  def __init__(self, path: str):
    self._log = JsonlAppender(path)
    self.path = self._log.path
    self._lock = threading.Lock()
    self._entries: dict[str, ChatReply] = {}
    for row in self._log.read():
      if isinstance(row, dict) and "key" in row and isinstance(row.get("text"), str):
        self._entries[row["key"]] = ChatReply(row["text"], row.get("top_logprobs"), cached=True)

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, model: str, request: ChatRequest) -> Optional[ChatReply]:
    with self._lock:
      return self._entries.get(cache_key(model, request))

  def put(self, model: str, request: ChatRequest, reply: ChatReply) -> None:
    key = cache_key(model, request)
    with self._lock:
      if key in self._entries:
        return
      self._entries[key] = ChatReply(reply.text, reply.top_logprobs, cached=True)
    self._log.append([{"key": key, "model": model, "text": reply.text,
                       "top_logprobs": reply.top_logprobs}])


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
