"""The HelpSteer3 multi-dimensional inference-time scaling search, and its baselines.

For each prompt: N drafts from the policy; for each draft F sampled feedbacks, filtered by a named
rule to at most M *effective* ones (the paper's grid counts M: "8 drafts x 16 feedbacks" keeps 16
per draft out of more sampled); the kept feedback split into groups (default 3, as in the Edit
data); K edits per group; then a selector scores every candidate (drafts and edits) and the best is
returned with the whole tree. Baselines come from the same code path by `mode`:

  greedy                 one greedy draft
  best_of_n              N sampled drafts, the selector picks
  feedback_edit          the full search (self-feedback / self-edit when the policy plays a role)
  edit_without_feedback  K revisions per draft with no feedback (ablation)

Each role sends its requests in its own `prompt_format` (formats/prompts.py). One prompt's tree,
its requests and what each stage adds are `PromptSearch`'s (scaling/prompt_search.py). Here the
`pipelined` schedule: all stages of all prompts in flight share one decode engine per model, each
request entering as soon as the stage before it has finished for that prompt. The `staged`
schedule (scaling/staged.py) runs the same requests one stage at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union, cast

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.parallel import device_memory
from helpsteer_jax.sampling.engine import Engine, EngineSettings
from helpsteer_jax.sampling.generate import sampling_settings
from helpsteer_jax.scaling.feedback_filters import get_rule
from helpsteer_jax.scaling.memory_plan import engine_slots
from helpsteer_jax.scaling.prefix_breaks import PROBES, SharedPrefixes
from helpsteer_jax.scaling.progress import StageProgress
from helpsteer_jax.scaling.prompt_search import PipelinedPrompt, PromptSearch
from helpsteer_jax.scaling.remote_roles import AnyRole, RemoteEngine, RemoteRole
from helpsteer_jax.scaling.roles import Role
from helpsteer_jax.scaling.search_settings import (  # noqa: F401 (named here for callers)
  MODES,
  SCHEDULES,
  SearchSettings,
  StageSampling,
  default_feedback_samples,
)
from helpsteer_jax.scaling.tree import Generated
from helpsteer_jax.scoring.selectors import Selector


@dataclasses.dataclass(frozen=True)
class SlotBudget:
  """Sizes each engine from the device's memory: `longest` positions of any request by model key,
  `tensor` the mesh's tensor-parallel width (the KV heads' split), `memory_fraction` the share of
  device memory for weights and caches."""

  longest: dict[str, int]
  tensor: int
  memory_fraction: float

  def size(self, role: str, config, key: str, batch_size: int) -> tuple[int, int]:
    """(slots, cache positions) for the engine of `key`, logged with the reason."""
    limit, in_use = device_memory.device_memory()
    longest = self.longest[key]
    slots, why = engine_slots(config, longest, self.tensor, batch_size, limit, in_use, self.memory_fraction)
    logging.info("engine of %s: %s", role, why)
    return slots, (longest if limit and self.memory_fraction > 0 else 0)


class FeedbackEditSearch:
  """Runs the search over prompts; `run` returns one JSON-ready record per prompt.

  Every stage of every prompt shares one decode engine per model (sampling/engine.py), fed as work
  becomes ready: a prompt's feedback requests enter as soon as its drafts finish, its edits as
  soon as its feedback is filtered, and the selector scores each candidate as it completes. New
  prompts are admitted while the engine would otherwise leave slots idle. Each sample's random key
  derives from (seed, prompt id, stage, candidate index), so a prompt's whole tree is the same
  whatever else runs beside it."""

  def __init__(
    self,
    settings: SearchSettings,
    policy: AnyRole,
    selector: Optional[Selector] = None,
    feedback: Optional[AnyRole] = None,
    edit: Optional[AnyRole] = None,
    progress: Optional[StageProgress] = None,
  ):
    self.settings = settings
    self.policy = policy
    self.feedback = feedback or policy
    self.edit = edit or policy
    self.selector = selector
    self.rule = get_rule(settings.feedback_rule)
    self.slot_budget: Optional[SlotBudget] = None  # engines sized from device memory when set
    self._engines: dict[str, Union[Engine, RemoteEngine]] = {}  # by model key
    self._shared: Optional[dict[str, SharedPrefixes]] = None  # by model key
    self._select_s = 0.0
    self.progress = progress or StageProgress()
    templates.check_prompt_format(self.feedback.prompt_format, "feedback")
    templates.check_prompt_format(self.edit.prompt_format, "edit")
    if settings.mode in ("best_of_n", "feedback_edit", "edit_without_feedback") and selector is None:
      raise ValueError(f"search mode {settings.mode!r} needs a selector")
    # A judge over the model of a role in use scores through that model's engine's kept prompt
    # chunks, and its prompts take part in that engine's shared prefixes.
    in_use = {r.model_key for r in self.roles_in_use()}
    self.judge_key = (
      selector.model_key if selector is not None and selector.shares_prefill and selector.model_key in in_use else None
    )

  def engine(self, role: AnyRole) -> Union[Engine, RemoteEngine]:
    """The engine of a role's model: roles played by one model share it (a remote role's: the
    calls to its endpoint)."""
    key = role.model_key
    if key not in self._engines and isinstance(role, RemoteRole):
      self._engines[key] = RemoteEngine(role.endpoint)
    if key not in self._engines:
      if role.model is None:
        raise RuntimeError(f"the model of role {role.name!r} is not loaded")
      base = sampling_settings(role.tokenizer)
      slots, cache_length = self.settings.batch_size, 0
      if self.slot_budget is not None and key in self.slot_budget.longest:
        slots, cache_length = self.slot_budget.size(role.name, role.model.config, key, slots)
      engine = self._engines[key] = Engine(
        role.model,
        EngineSettings(
          num_slots=slots,
          cache_length=cache_length,
          stop_token_ids=base.stop_token_ids,
          pad_id=base.pad_id,
          prefix_entries=self.settings.prefix_entries,
        ),
      )
      if key == self.judge_key and self.selector is not None:  # a judge key implies a selector
        self.selector.use_prefill(engine.prefill)
    return self._engines[key]

  def release_engines(self) -> None:
    """Drops every engine (with its caches and kept chunks) and the judge's use of one."""
    if self.judge_key is not None and self.judge_key in self._engines and self.selector is not None:
      self.selector.use_prefill(None)
    for engine in self._engines.values():
      if isinstance(engine, RemoteEngine):
        engine.close()
    self._engines.clear()

  def roles_in_use(self) -> list[AnyRole]:
    mode = self.settings.mode
    return (
      [self.policy]
      + ([self.feedback] if mode == "feedback_edit" else [])
      + ([self.edit] if mode in ("feedback_edit", "edit_without_feedback") else [])
    )

  def shared_prefixes(self) -> dict[str, SharedPrefixes]:
    """By model key, how the prompts that model's engine prefills about a draft are probed for
    their shared prefixes (scaling/prefix_breaks.py): the roles and judge that run on it. They
    depend on the roles' tokenizers and layouts only, not on which models are loaded."""
    if self._shared is None:
      s, fb, ed = self.settings, self.feedback, self.edit
      builders: dict[str, dict] = {}
      probes: dict[str, list] = {}
      # A remote role's prompts are prefilled by its server: no local engine shares them.
      if s.mode == "feedback_edit" and isinstance(fb, Role):
        builders.setdefault(fb.model_key, {})["feedback"] = lambda c, r: fb.encode(
          templates.feedback_request(c, r, fb.prompt_format)
        )
      if s.mode == "feedback_edit" and isinstance(ed, Role):
        edit_ids = lambda c, r, f: ed.encode(templates.edit_request(c, r, [f], ed.prompt_format))
        builders.setdefault(ed.model_key, {})["edit"] = lambda c, r: edit_ids(c, r, PROBES[0])
        probes.setdefault(ed.model_key, []).append(edit_ids)
      elif s.mode == "edit_without_feedback" and isinstance(ed, Role):
        builders.setdefault(ed.model_key, {})["edit"] = lambda c, r: ed.encode(
          templates.revision_request(c, r, ed.prompt_format)
        )
      if self.judge_key is not None and self.selector is not None and s.mode != "greedy":
        builders.setdefault(self.judge_key, {})["judge"] = self.selector.prompt_ids
      self._shared = {m: SharedPrefixes(b, probes.get(m, ())) for m, b in builders.items()}
    return self._shared

  def prefixes(
    self, model_key: str, conversation: Conversation, prompt: PromptSearch, d: Optional[int] = None
  ) -> list[tuple[int, ...]]:
    """Token prefixes that the prompts about `conversation` (and about its draft `d`) share on
    the engine of `model_key`: each prompt's prefill chunks break where it stops matching one."""
    shared = self.shared_prefixes().get(model_key)
    if shared is None:
      return []
    cache = prompt.prefix_cache
    if (model_key, None) not in cache:
      cache[model_key, None] = shared.of_conversation(conversation)
    if d is None:
      return [cache[model_key, None]]
    if (model_key, d) not in cache:
      cache[model_key, d] = shared.of_response(conversation, prompt.tree.draft(d).answer.text)
    return [cache[model_key, None], cache[model_key, d]]

  def score(self, prompt: PromptSearch, nodes: Sequence[Generated], of_draft: Optional[int] = None) -> None:
    """Scores `nodes`: the drafts themselves when `of_draft` names one (their judge prompt shares
    the draft with its Feedback and Edit prompts), else edits."""
    if self.selector is None or prompt.greedy_mode:
      return
    started = time.perf_counter()
    conv = prompt.conversation
    for node in nodes:  # one at a time: a score never depends on what it was batched with
      prefixes = () if self.judge_key is None else self.prefixes(self.judge_key, conv, prompt, of_draft)
      node.score = self.selector.score([(conv, node.text)], prefixes)[0]
    self._select_s += time.perf_counter() - started
    self.progress.add_scored(len(nodes))

  def stats(self) -> dict[str, Any]:
    """Each engine's slot use and per-stage tokens, and the seconds spent selecting."""
    names: dict[str, str] = {}
    for role in (self.policy, self.feedback, self.edit):
      names.setdefault(role.model_key, role.name)
    return {"engines": {names.get(k, k): e.stats() for k, e in self._engines.items()}, "select_seconds": self._select_s}

  def run(
    self,
    items: Sequence[PromptItem],
    on_record: Optional[Callable[[dict[str, Any]], None]] = None,
    min_in_flight: int = 1,
    max_in_flight: int = 0,
  ) -> list[dict[str, Any]]:
    """The pipelined schedule. Records in the order of `items`. `on_record` receives each record,
    also in that order, as soon as it and every earlier one are complete; at least
    `min_in_flight` prompts are admitted at a time, and more while the policy's engine has free
    slots, up to `max_in_flight` (0: no cap)."""
    if not items:
      return []
    records: list[Optional[dict[str, Any]]] = [None] * len(items)
    complete = [False] * len(items)
    emitted = 0
    admitted = 0
    open_prompts = 0
    for role in self.roles_in_use():  # the judge shares the prefill of the first engine on its model
      self.engine(role)
    policy_engine = self.engine(self.policy)

    def finished(p: int, prompt: PromptSearch) -> None:
      nonlocal emitted, open_prompts
      records[p] = prompt.tree.to_record()
      complete[p] = True
      open_prompts -= 1
      while emitted < len(items) and complete[emitted]:
        record = records[emitted]
        if on_record is not None and record is not None:  # a complete prompt has its record
          on_record(record)
        emitted += 1

    while admitted < len(items) or any(e.busy for e in self._engines.values()):
      while (
        admitted < len(items)
        and (not max_in_flight or open_prompts < max_in_flight)
        and (open_prompts < min_in_flight or policy_engine.queued_samples(min_priority=0) < policy_engine.free_slots)
      ):
        PipelinedPrompt(self, items[admitted], functools.partial(finished, admitted)).start()
        admitted += 1
        open_prompts += 1
      for engine in list(self._engines.values()):
        if engine.busy:
          engine.step()
    # Every prompt is complete once none is left to admit and no engine is busy.
    return cast(list[dict[str, Any]], records)
