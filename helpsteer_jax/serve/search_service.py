"""The search served as a model: a chat request to it runs the whole HelpSteer3 search
(scaling/search.py) over the request's conversation and answers with the chosen candidate.

Every request's tree runs on the search's engines, which the server's loop steps beside any other
model's, so concurrent requests (and plain requests to the policy, when it is served too) share
the batches. The tree is the one the in-process search gives a prompt with id `SERVED_PROMPT_ID`
under `search.seed` = the request's seed: every sample's key derives from (seed, prompt id,
stage, indices), never from what else is running.

The request's sampling fields do not steer the search: each stage samples as the search config
says (`search.draft`, `search.feedback`, `search.edit`), so `temperature`, `top_p` and `max_tokens`
are accepted (evaluation clients always send them) and recorded with the tree, not applied; `n`
must be 1 and `stop` cuts the chosen answer. `usage.completion_tokens` counts every token the
tree generated and `usage.search_tokens` splits them by stage (`usage.prompt_tokens` is the
policy's prompt, 0 when the policy is a remote role whose tokenizer is on its server); the whole record is kept under the
completion's id (`GET /v1/search_records/{id}`), and appended to a JSON-lines file when one is
given, so none is lost with the process.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import secrets
import threading
from collections.abc import Callable
from typing import Any, Optional

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.scaling.prompt_search import PipelinedPrompt, Search
from helpsteer_jax.scaling.request_lengths import RoleLimits, check_request_lengths
from helpsteer_jax.scaling.roles import Role
from helpsteer_jax.scaling.search import FeedbackEditSearch
from helpsteer_jax.serve.engine_loop import EngineLoop
from helpsteer_jax.serve.model_service import Choice
from helpsteer_jax.serve.protocol import ChatCompletionRequest, CompletionRequest, ServeError

SERVED_PROMPT_ID = "0"


@dataclasses.dataclass(frozen=True)
class SearchJob:
  """A chat request checked against every stage's context, ready for the search."""

  item: PromptItem
  prompt: list[int]  # the policy's prompt ids (usage.prompt_tokens)
  seed: int
  stops: tuple[str, ...]
  request_fields: dict[str, Any]  # the sampling fields the client sent, recorded with the tree
  n: int = 1


class ServedPrompt(PipelinedPrompt):
  """A prompt whose sample keys derive from the request's seed instead of the config's."""

  def __init__(self, search: Search, item: PromptItem, seed: int, on_finished: Callable[[PipelinedPrompt], None]):
    super().__init__(search, item, on_finished)
    self.seed = seed

  def key(self, *parts: object):
    return sample_key(self.seed, SERVED_PROMPT_ID, *parts)


class SearchRecords:
  """The trees of recent requests by completion id (the newest `keep`), and each appended to
  `path` (JSON lines) as it finishes."""

  def __init__(self, keep: int, path: str = ""):
    if keep < 1:
      raise ValueError(f"keep={keep}; expected at least 1")
    self.keep, self.path = keep, path
    self._records: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def add(self, record: dict[str, Any]) -> None:
    with self._lock:
      self._records[record["id"]] = record
      while len(self._records) > self.keep:
        self._records.popitem(last=False)
      if self.path:
        with open(self.path, "a", encoding="utf-8") as f:
          f.write(json.dumps(record) + "\n")

  def get(self, record_id: str) -> Optional[dict[str, Any]]:
    with self._lock:
      return self._records.get(record_id)


class SearchService:
  """The search of `search` served as model `name`; its engines join `loop`."""

  def __init__(self, name: str, search: FeedbackEditSearch, loop: EngineLoop, records: SearchRecords):
    if search.settings.mode == "greedy":
      raise ValueError("search.mode='greedy' is the plain model; serve the policy instead")
    self.name, self.search, self.records = name, search, records
    self._loop = loop
    for role in search.roles_in_use():
      loop.add_engine(search.engine(role))
    # A remote role's server checks its own context (scaling/request_lengths.py).
    self._limits = [
      RoleLimits(role.name, role.tokenizer, role.prompt_format, role.model.config.max_position_embeddings)
      if isinstance(role, Role) and role.model is not None
      else RoleLimits(role.name, None, role.prompt_format, 0)
      for role in (search.policy, search.feedback, search.edit)
    ]

  def chat_job(self, request: ChatCompletionRequest) -> SearchJob:
    if request.n != 1:
      raise ServeError(400, f"model {self.name!r} returns the search's one chosen answer: n must be 1", param="n")
    conversation = [{"role": m.role, "content": m.content} for m in request.messages]
    if conversation[-1]["role"] != "user":
      raise ServeError(400, "the search answers a conversation that ends with a user message", param="messages")
    item = PromptItem(SERVED_PROMPT_ID, conversation)
    try:
      check_request_lengths([item], self.search.settings, *self._limits)
    except ValueError as e:
      raise ServeError(400, str(e), param="messages", code="context_length_exceeded") from None
    sent = request.model_dump(
      include={"temperature", "top_p", "max_tokens", "max_completion_tokens"}, exclude_unset=True
    )
    seed = request.seed if request.seed is not None else secrets.randbits(31)
    policy = self.search.policy
    prompt = policy.encode(conversation) if isinstance(policy, Role) else []  # a remote policy's: unknown here
    return SearchJob(item, prompt, seed, tuple(request.stop_sequences()), sent)

  def completion_job(self, request: CompletionRequest) -> SearchJob:
    raise ServeError(400, f"model {self.name!r} searches over a conversation: use /v1/chat/completions", param="model")

  def start(self, job: SearchJob, on_choice: Optional[Callable[[Choice], None]] = None, request_id: str = ""):
    """The chosen answer as a one-choice future; `on_choice` gets it on the loop's thread."""

    def start_on_loop(done, fail) -> None:
      def finished(prompt: PipelinedPrompt) -> None:
        record = prompt.tree.to_record()
        record.update(id=request_id or record["id"], seed=job.seed, request=job.request_fields)
        self.records.add(record)
        choice = self._choice(job, prompt, record)
        if on_choice is not None:
          on_choice(choice)
        done([choice])

      ServedPrompt(self.search, job.item, job.seed, finished).start()

    return self._loop.submit(start_on_loop)

  def _choice(self, job: SearchJob, prompt: PipelinedPrompt, record: dict[str, Any]) -> Choice:
    best = record["best"]
    node = prompt.tree.node((best["draft"], best["group"], best["edit"]))
    generated = record["tokens"]["total"]
    cut = min((i for i in (node.text.find(s) for s in job.stops) if i >= 0), default=-1)
    if cut >= 0:
      return Choice(0, node.text[:cut], generated, "stop")
    return Choice(0, node.text, generated, "stop" if node.finished else "length")

  def usage(self, job: SearchJob, choices: list[Choice], request_id: str) -> dict[str, Any]:
    record = self.records.get(request_id)
    generated = sum(c.tokens for c in choices)
    usage: dict[str, Any] = {
      "prompt_tokens": len(job.prompt),
      "completion_tokens": generated,
      "total_tokens": len(job.prompt) + generated,
    }
    if record is not None:
      usage["search_tokens"] = record["tokens"]
    return usage
