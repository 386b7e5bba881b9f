"""A loopback OpenAI-compatible judge server for the evaluation tests.

`JudgeServer` serves POST /v1/chat/completions on 127.0.0.1 from a thread. It records every
request (headers and body), can be told to fail the next calls with given HTTP statuses, and
answers like a judge of each benchmark: an Arena-Hard verdict, an MT-Bench rating, or an
AlpacaEval identifier (with log-probabilities when asked), or as `reply` says; its usage counts
the reply's words as completion tokens.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, cast


def benchmark_reply(messages: list[dict[str, str]]) -> str:
  system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
  user = messages[-1]["content"]
  if "[[A>>B]]" in system:
    return "My own answer first. Comparing both... My final verdict is: [[A>B]]"
  if "[[rating]]" in system + user:
    return "The answer is fine. Rating: [[6]]" if "Reference" in user else "Good answer. Rating: [[8]]"
  if "either m or M" in user:
    return "m"
  return "unrecognised request"


class JudgeServer:
  def __init__(self, reply: Callable[[list[dict[str, str]]], str] = benchmark_reply):
    self.requests: list[dict[str, Any]] = []
    self.fail_next: list[int] = []  # statuses returned, in order, before normal replies
    self.reply = reply
    server = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *args):  # keep test output quiet
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server._lock:
          server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
          status = server.fail_next.pop(0) if server.fail_next else 200
        if self.path != "/v1/chat/completions":
          status = 404
        if status != 200:
          payload = json.dumps({"error": {"message": f"forced status {status}"}}).encode()
        else:
          text = server.reply(body["messages"])
          choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
          }
          if body.get("logprobs"):
            top = [{"token": "m", "logprob": math.log(0.8)}, {"token": "M", "logprob": math.log(0.2)}]
            choice["logprobs"] = {"content": [{"token": text[:1], "logprob": math.log(0.8), "top_logprobs": top}]}
          words = len(text.split())
          usage = {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": 1 + words}
          payload = json.dumps(
            {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}
          ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    self._lock = threading.Lock()
    self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._thread: Optional[threading.Thread] = None

  @property
  def base_url(self) -> str:
    # An AF_INET server's address is (host str, port int); the socketserver types also allow bytes.
    host, port = cast(tuple[str, int], self._httpd.server_address[:2])
    return f"http://{host}:{port}/v1"

  def __enter__(self) -> "JudgeServer":
    self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._httpd.shutdown()
    self._httpd.server_close()
