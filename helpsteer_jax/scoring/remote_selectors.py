"""Selectors behind an OpenAI-compatible endpoint (remote/endpoint.py): the search's selector as a
remote reward model or a remote generative judge.

`RemoteRewardSelector` speaks the request shape of NVIDIA NIM's reward models: POST
`{base_url}/chat/completions` with the conversation and the response as its last, assistant,
message, `{"model": ..., "messages": [..., {"role": "assistant", "content": response}]}`; the reply's
`choices[0].message.content` holds `name:value` pairs separated by commas (`reward:-17.25` for a
one-output model such as Llama-3.3-Nemotron-70B-Select, or the five HelpSteer attributes for a
multi-attribute one). The score is the pair named `attribute` when one is named; otherwise a lone
pair's value, or HelpSteer2's weighted sum of the five attributes (checkpoints/reward.py).

`RemoteJudgeSelector` sends the judge's request (formats/prompts.py `judge_request`, which ends in
the pre-filled assistant answer) with vLLM's `continue_final_message` so the next token is the
score digit, asking for one token and its top log-probabilities. The score is the expectation of
the digit 0-4 under those alternatives (as `GenerativeJudgeSelector` computes it from logits); a
server that returns no log-probabilities gives the digit it wrote.

Both score one item per call, up to the endpoint's `max_concurrency` at once.
"""

from __future__ import annotations

import concurrent.futures
import math
import re
from collections.abc import Sequence
from typing import Any

from helpsteer_jax.checkpoints.reward import HELPSTEER2_WEIGHTS
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.remote.endpoint import Endpoint

JUDGE_TOP_LOGPROBS = 20


def parse_reward(content: str, attribute: str = "") -> float:
  """The score of a NIM reward reply's `name:value,name:value` content (see the module's doc)."""
  pairs: dict[str, float] = {}
  for part in content.split(","):
    name, sep, value = part.partition(":")
    if not sep:
      raise ValueError(f"a reward reply part {part!r} is not name:value")
    pairs[name.strip().lower()] = float(value)
  if attribute:
    if attribute not in pairs:
      raise ValueError(f"the reward reply {content!r} has no {attribute!r}")
    return pairs[attribute]
  if len(pairs) == 1:
    return next(iter(pairs.values()))
  missing = [name for name in HELPSTEER2_WEIGHTS if name not in pairs]
  if missing:
    raise ValueError(f"the reward reply {content!r} lacks the weighted attribute(s) {missing}; name one as attribute")
  return sum(weight * pairs[name] for name, weight in HELPSTEER2_WEIGHTS.items())


def judge_score(data: Any) -> float:
  """The expected digit 0-4 of a one-token judge reply (see the module's doc)."""
  choice = data["choices"][0]
  logprobs = choice.get("logprobs") or {}
  content = logprobs.get("content") if isinstance(logprobs, dict) else None
  if content:
    first = content[0]
    alternatives = {alt["token"].strip(): float(alt["logprob"]) for alt in first.get("top_logprobs") or []}
    alternatives.setdefault(first["token"].strip(), float(first["logprob"]))
    digits = {int(t): lp for t, lp in alternatives.items() if t in ("0", "1", "2", "3", "4")}
    if digits:
      top = max(digits.values())
      weights = {d: math.exp(lp - top) for d, lp in digits.items()}
      return sum(d * w for d, w in weights.items()) / sum(weights.values())
  match = re.search(r"[0-4]", choice["message"].get("content") or "")
  if match is None:
    raise ValueError(f"the judge wrote no score digit 0-4: {choice['message'].get('content')!r}")
  return float(match.group())


class _RemoteSelector:
  shares_prefill = False  # the prompts are prefilled by the server

  def __init__(self, endpoint: Endpoint, prompt_format: str):
    self.endpoint = endpoint
    self.prompt_format = prompt_format
    self.model_key = endpoint.name

  @property
  def served_by(self) -> str:
    return self.endpoint.name

  def prompt_ids(self, conversation: Conversation, response: str) -> list[int]:
    raise NotImplementedError("a remote selector's prompts are tokenized by its server")

  def use_prefill(self, prefill) -> None:
    if prefill is not None:
      raise ValueError("a remote selector scores on its server, not through a local prefill")

  def _payload(self, conversation: Conversation, response: str) -> dict[str, Any]:
    raise NotImplementedError

  def _parse(self, data: Any) -> float:
    raise NotImplementedError

  def score(self, items: Sequence[tuple[Conversation, str]], prefixes: Sequence[Sequence[int]] = ()) -> list[float]:
    calls = [(self._payload(conv, response)) for conv, response in items]
    if len(calls) <= 1:
      return [self.endpoint.post("chat/completions", p, parse=self._parse) for p in calls]
    workers = min(len(calls), self.endpoint.settings.max_concurrency)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      return list(pool.map(lambda p: self.endpoint.post("chat/completions", p, parse=self._parse), calls))


class RemoteRewardSelector(_RemoteSelector):
  name = "reward_model"

  def __init__(self, endpoint: Endpoint, prompt_format: str = "plain", attribute: str = ""):
    super().__init__(endpoint, prompt_format)
    self.attribute = attribute.lower()

  def _payload(self, conversation: Conversation, response: str) -> dict[str, Any]:
    messages = templates.select_request(conversation, response, self.prompt_format)
    return {"model": self.endpoint.settings.model, "messages": [dict(m) for m in messages]}

  def _parse(self, data: Any) -> float:
    return parse_reward(str(data["choices"][0]["message"]["content"]), self.attribute)


class RemoteJudgeSelector(_RemoteSelector):
  name = "generative_judge"

  def _payload(self, conversation: Conversation, response: str) -> dict[str, Any]:
    messages = templates.judge_request(conversation, response, self.prompt_format)
    return {
      "model": self.endpoint.settings.model,
      "messages": [dict(m) for m in messages],
      "max_tokens": 1,
      "temperature": 0.0,
      "logprobs": True,
      "top_logprobs": JUDGE_TOP_LOGPROBS,
      # vLLM's extension: continue the pre-filled answer rather than start a new turn.
      "continue_final_message": True,
      "add_generation_prompt": False,
    }

  def _parse(self, data: Any) -> float:
    return judge_score(data)
