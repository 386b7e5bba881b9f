"""A role of the search played by a model behind an OpenAI-compatible endpoint (`kind=openai`):
vLLM, an NVIDIA NIM of the released models, or this project's `python -m helpsteer_jax.serve`.

Its requests go to `/chat/completions` as the role's messages (its `prompt_format`, rendered by the
server's chat template), one HTTP call per sample, so that each sample has its own seed and its
own token count (`usage.completion_tokens`) and a resumed or partial request asks for exactly the
samples it lacks. A sample's seed derives from its key (seed, prompt id, stage, indices) and its
index: against a server that honours `seed` (vLLM, this project's) a tree is the same on a rerun.

`RemoteEngine` stands where a decode engine stands in the pipelined schedule: `submit` starts the
calls on a pool of `max_concurrency` threads, and `step` (on the search's thread) hands every
finished sample to its request's callbacks, so the search's own state is touched by one thread
only. A call that fails for good (the endpoint's retries exhausted, or a 4xx) fails the search
with the endpoint's error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np

from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.remote.endpoint import Endpoint
from helpsteer_jax.sampling.engine import Request
from helpsteer_jax.sampling.generate import Sample
from helpsteer_jax.scaling.roles import Role
from helpsteer_jax.scaling.search_settings import StageSampling

# How long `step` waits for a call to finish when none has: short, so that a local engine stepped
# by the same loop is not held up.
STEP_WAIT_S = 0.01


def sample_seed(key: np.ndarray, index: int) -> int:
  """The `seed` of sample `index` of a request with raw key `key` (sampling/keys.py)."""
  digest = hashlib.blake2b(np.asarray(key, np.uint32).tobytes() + index.to_bytes(4, "little"), digest_size=4)
  return int.from_bytes(digest.digest(), "little") & 0x7FFFFFFF


def parse_sample(data: Any) -> Sample:
  """A chat completion of one choice as a `Sample`: its text, generated tokens and whether it
  stopped by itself (`finish_reason` "stop") rather than at `max_tokens`."""
  choice = data["choices"][0]
  return Sample(
    str(choice["message"].get("content") or ""),
    int(data["usage"]["completion_tokens"]),
    choice.get("finish_reason") == "stop",
  )


@dataclasses.dataclass
class RemoteRequest:
  """The calls of one search request: a payload per sample index."""

  tag: str
  priority: int
  payloads: dict[int, dict[str, Any]]  # by sample index
  on_done: Optional[Callable[[list[Sample]], None]]
  on_sample: Optional[Callable[[int, Sample], None]]
  samples: dict[int, Sample] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RemoteRole:
  """A model playing one role (policy, feedback, edit) behind `endpoint`. Like `Role`, roles
  with one `model_key` (one endpoint and model) share an engine."""

  name: str
  endpoint: Endpoint
  prompt_format: str = "plain"
  model_key: str = ""
  remote = True
  model = None  # nothing loads here
  tokenizer = None

  def __post_init__(self):
    self.model_key = self.model_key or self.endpoint.name

  @property
  def served_by(self) -> str:
    return self.endpoint.name

  def request(
    self,
    conversation: Conversation,
    stage: StageSampling,
    n: int,
    key,
    tag: str,
    on_done,
    greedy: bool = False,
    on_sample=None,
    priority: int = 0,
    prefixes: Sequence[Sequence[int]] = (),
    indices: Sequence[int] = (),
    stop_when: Optional[Callable[[str], bool]] = None,
    stop_check_tokens: int = 0,
  ) -> RemoteRequest:
    """`Role.request`'s arguments. `prefixes` concern a local engine's prefill, and a remote
    sample arrives whole, so `stop_when` (an early exit) is not applied: both are unused."""
    payload: dict[str, Any] = {
      "model": self.endpoint.settings.model,
      "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
      "max_tokens": stage.max_new_tokens,
      "temperature": 0.0 if greedy else stage.temperature,
      "n": 1,
    }
    if not greedy and stage.top_p is not None and stage.top_p < 1.0:
      payload["top_p"] = stage.top_p
    if not greedy and stage.top_k is not None:
      payload["top_k"] = stage.top_k  # vLLM's extension of the API; OpenAI refuses it
    wanted = list(indices) if indices else list(range(n))
    return RemoteRequest(
      tag, priority, {j: dict(payload, seed=sample_seed(key, j)) for j in wanted}, on_done, on_sample
    )


class RemoteEngine:
  """Runs `RemoteRequest`s against one endpoint; the pipelined schedule steps it like an engine."""

  def __init__(self, endpoint: Endpoint):
    self.endpoint = endpoint
    self._pool = concurrent.futures.ThreadPoolExecutor(
      max_workers=endpoint.settings.max_concurrency, thread_name_prefix="remote-role"
    )
    self._pending: dict[concurrent.futures.Future, tuple[RemoteRequest, int]] = {}
    self._started = time.perf_counter()
    self._tokens: collections.Counter[str] = collections.Counter()
    self._samples: collections.Counter[str] = collections.Counter()

  @property
  def busy(self) -> bool:
    return bool(self._pending)

  @property
  def free_slots(self) -> int:
    return max(0, self.endpoint.settings.max_concurrency - len(self._pending))

  def queued_samples(self, min_priority: Optional[int] = None) -> int:
    """Calls not answered yet (of requests at `min_priority` or above, when given)."""
    return sum(1 for r, _ in self._pending.values() if min_priority is None or r.priority >= min_priority)

  def submit(self, request: RemoteRequest) -> None:
    for j, payload in request.payloads.items():
      future = self._pool.submit(self.endpoint.post, "chat/completions", payload, parse_sample)
      self._pending[future] = (request, j)

  def step(self) -> None:
    """Hands each finished call to its request (in submission order); waits briefly when none
    has finished. A call that failed for good raises its error here."""
    done, _ = concurrent.futures.wait(
      list(self._pending), timeout=STEP_WAIT_S, return_when=concurrent.futures.FIRST_COMPLETED
    )
    for future in [f for f in self._pending if f in done]:
      request, j = self._pending.pop(future)
      sample = future.result()
      request.samples[j] = sample
      self._tokens[request.tag] += sample.num_tokens
      self._samples[request.tag] += 1
      if request.on_sample is not None:
        request.on_sample(j, sample)
      if len(request.samples) == len(request.payloads) and request.on_done is not None:
        request.on_done([request.samples[i] for i in sorted(request.samples)])

  def close(self) -> None:
    for future in self._pending:
      future.cancel()
    self._pool.shutdown(wait=False)

  def stats(self) -> dict[str, Any]:
    """The engine's stats shape (scaling/progress.stage_log_lines): per-tag samples and tokens,
    tokens/s over the engine's life, and the endpoint's calls."""
    span = max(time.perf_counter() - self._started, 1e-9)
    return {
      "endpoint": self.endpoint.name,
      "calls": self.endpoint.calls,
      "most_calls_in_flight": self.endpoint.most_in_flight,
      "stages": {
        tag: {"samples": self._samples[tag], "tokens": self._tokens[tag], "tokens_per_s": self._tokens[tag] / span}
        for tag in sorted(self._samples)
      },
    }


AnyRole = Union[Role, RemoteRole]
AnyRequest = Union[Request, RemoteRequest]
