"""The staged schedule: the search one stage at a time over all the run's prompts, with only the
stage's model loaded.

    policy     drafts and the greedy reference      the policy model
    rank       the drafts scored                    the selector's model (only with
                                                    search.feedback_drafts: feedback on the best)
    feedback   F feedbacks per draft, then the rule  the Feedback model
    edit       K edits per feedback group            the Edit model
    select     every candidate scored, the choice   the selector's model

Each model is freed before the next one loads (roles played by one model keep it, and its engine,
across their stages). Every finished sample goes to `<run folder>/stages/<stage>.jsonl` as a
`StageSample`, appended and fsynced after each decode call; a rerun reads them back into the
prompts' trees and sends only the samples still missing (`Request.sample_indices`), so a kill
during any stage loses at most the samples in flight. The select stage writes each prompt's record
to `results.jsonl` in prompt order, as the pipelined schedule does.

The requests, their keys and prefill breaks are `PromptSearch`'s under both schedules, so both
give the same records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Optional, Protocol, cast

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.sampling.engine import Engine
from helpsteer_jax.sampling.generate import Sample
from helpsteer_jax.scaling.prompt_search import PromptSearch
from helpsteer_jax.scaling.search import FeedbackEditSearch
from helpsteer_jax.scaling.search_settings import SearchSettings

STAGES = ("policy", "rank", "feedback", "edit", "select")
# The stages that score with the selector, and so load its model.
SCORING_STAGES = ("rank", "select")
STAGE_DIR = "stages"
# The stage file each kind of sample is written to.
FILE_OF = {"draft": "policy", "greedy": "policy", "feedback": "feedback", "edit": "edit"}


def stages_of(settings: SearchSettings) -> tuple[str, ...]:
  """The stages a search runs (greedy's select stage only completes the records)."""
  stages = {
    "greedy": ("policy", "select"),
    "best_of_n": ("policy", "select"),
    "edit_without_feedback": ("policy", "edit", "select"),
  }.get(settings.mode, STAGES)
  return tuple(s for s in stages if s != "rank" or settings.feedback_on_top_drafts)


@dataclasses.dataclass(frozen=True)
class StageSample:
  """One finished sample: `kind` draft | greedy | feedback | edit; `draft` the draft it belongs
  to (a draft's own index for kind draft, None for greedy); `group` the edit group (edits only);
  `index` its place among its request's samples."""

  id: str
  kind: str
  draft: Optional[int]
  group: Optional[int]
  index: int
  text: str
  num_tokens: int
  finished: bool
  stopped_early: bool = False

  @property
  def sample(self) -> Sample:
    return Sample(self.text, self.num_tokens, self.finished, self.stopped_early)

  @property
  def request(self) -> tuple:
    """What identifies the request it came from."""
    return (self.kind, self.draft if self.kind != "draft" else None, self.group)

  def to_record(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "StageSample":
    return cls(**{f.name: r[f.name] for f in dataclasses.fields(cls) if f.name in r or f.name != "stopped_early"})


class StageLog:
  """The stage files of a run folder: samples are buffered by `add` and appended (flushed and
  fsynced) by `flush`. With `writes` off (a process other than the writer of a multi-host run)
  it writes nothing."""

  def __init__(self, folder: str, writes: bool = True):
    self.folder = storage.join(folder, STAGE_DIR)
    self._files = (
      {name: JsonlAppender(storage.join(self.folder, f"{name}.jsonl")) for name in sorted(set(FILE_OF.values()))}
      if writes
      else {}
    )
    self._buffer: dict[str, list[dict[str, Any]]] = {name: [] for name in self._files}

  def read(self) -> list[StageSample]:
    return [StageSample.from_record(r) for name in sorted(self._files) for r in self._files[name].read()]

  def add(self, sample: StageSample) -> None:
    if self._files:
      self._buffer[FILE_OF[sample.kind]].append(sample.to_record())

  def flush(self) -> None:
    for name, rows in self._buffer.items():
      if rows:
        self._files[name].append(rows)
        rows.clear()

  def compact(self) -> None:
    """In a bucket, each stage file's appended objects as one (a no-op on disk)."""
    for log in self._files.values():
      log.compact()


class StageModels(Protocol):
  """Loads and frees the models of the stages: `load(stage, search)` gives the roles (and, for
  select, the selector) of the stage's model their loaded model; `free(search)` drops every loaded
  model. `key(stage, search)` is the model key a stage runs on."""

  def key(self, stage: str, search: FeedbackEditSearch) -> str: ...

  def load(self, stage: str, search: FeedbackEditSearch) -> None: ...

  def free(self, search: FeedbackEditSearch) -> None: ...


class SelectorToLoad:
  """The selector of the select stage before it loads: its name and model key, for the search's
  records and schedule; it shares no prefill and scores nothing."""

  shares_prefill = False

  def __init__(self, name: str, model_key: str):
    self.name, self.model_key = name, model_key

  def score(self, items, prefixes=()) -> list[float]:
    raise RuntimeError(f"the selector {self.model_key} is not loaded: it scores in the select stage")

  def prompt_ids(self, conversation, response) -> list[int]:
    raise RuntimeError("a selector that shares no prefill has no prompts to share")

  def use_prefill(self, prefill) -> None:
    raise TypeError("a selector that shares no prefill is never handed one")


class StagedSearch:
  """Runs `search`'s requests stage by stage (see the module docstring); `models` loads each
  stage's model, `log` keeps the stage outputs, `on_stage(name)` is told as each stage starts."""

  def __init__(
    self,
    search: FeedbackEditSearch,
    models: StageModels,
    log: StageLog,
    on_stage: Callable[[str], None] = lambda name: None,
  ):
    if search.settings.feedback_sampling == "waves":
      raise ValueError("search.feedback_sampling='waves' runs under the pipelined schedule, not staged")
    if search.settings.budgeted:
      raise ValueError("search.token_budget and settle_margin run under the pipelined schedule, not staged")
    self.search = search
    self.models = models
    self.log = log
    self.on_stage = on_stage
    self._current: Optional[str] = None  # the key of the model loaded
    self._selector_loaded = False  # whether the selector is loaded over it
    self.engine_stats: dict[str, Any] = {}  # each engine's `stats()`, kept as it is dropped

  def run(
    self,
    items: Sequence[PromptItem],
    written: Sequence[StageSample] = (),
    on_record: Optional[Callable[[dict[str, Any]], None]] = None,
  ) -> list[dict[str, Any]]:
    """Records in the order of `items`, each passed to `on_record` as it is complete. `written`:
    the samples an earlier run wrote (`StageLog.read`; samples of other prompts are ignored)."""
    prompts = [PromptSearch(self.search, item) for item in items]
    have: dict[str, dict[tuple, dict[int, Sample]]] = {p.item.id: {} for p in prompts}
    for s in written:
      if s.id in have:
        have[s.id].setdefault(s.request, {})[s.index] = s.sample
    records: list[dict[str, Any]] = []
    try:
      for stage in stages_of(self.search.settings):
        if stage == "select":
          records = self._select(prompts, on_record)
        elif stage == "rank":
          self._rank(prompts)
        else:
          self._sample(stage, prompts, have)
    finally:
      self.log.flush()
      self._release()
    return records

  def _release(self) -> None:
    self.engine_stats.update(self.search.stats()["engines"])
    self.search.release_engines()
    self.models.free(self.search)
    self._current = None
    self._selector_loaded = False

  def _enter(self, stage: str) -> None:
    """Loads the stage's model, the previous one freed first unless it is the same."""
    key = self.models.key(stage, self.search)
    if key != self._current:
      self._release()
      self.models.load(stage, self.search)
      self._current = key
      self._selector_loaded = stage in SCORING_STAGES
    elif stage in SCORING_STAGES and not self._selector_loaded:
      self.models.load(stage, self.search)  # the selector itself, over the model already loaded
      self._selector_loaded = True
    self.on_stage(stage)

  # -- sampling stages ----------------------------------------------------------------------------

  def _sample(self, stage: str, prompts: list[PromptSearch], have: dict[str, dict[tuple, dict[int, Sample]]]) -> None:
    """Puts the samples on disk into the trees; sends every request of `stage` that is not
    complete there, for its missing samples only, and decodes until all are done. A stage with
    nothing left to do loads no model."""
    search = self.search
    role = {"policy": search.policy, "feedback": search.feedback, "edit": search.edit}[stage]
    to_send = []
    for p in prompts:
      for request_id, n, make, complete in self._requests(stage, p):
        samples = have[p.item.id].setdefault(request_id, {})
        if request_id[0] == "draft":  # drafts already written go into the tree one by one
          for j in sorted(samples):
            p.add_draft(j, samples[j])
        missing = [j for j in range(n) if j not in samples]
        if not missing:
          if request_id[0] != "draft":
            complete([samples[i] for i in range(n)])
          continue
        on_sample = partial(self._on_sample, p, request_id, samples, n, complete)
        to_send.append((make, on_sample, missing))
    if not to_send:
      return
    self._enter(stage)
    engine = search.engine(role)
    for make, on_sample, missing in to_send:
      engine.submit(make(on_sample, missing))
    while engine.busy:
      engine.step()
      self.log.flush()  # each decode call's finished samples, appended and fsynced

  def _on_sample(
    self,
    p: PromptSearch,
    request_id: tuple,
    samples: dict[int, Sample],
    n: int,
    complete: Callable[[list[Sample]], None],
    j: int,
    sample: Sample,
  ) -> None:
    kind, d, g = request_id
    self.log.add(
      StageSample(
        p.item.id,
        kind,
        j if kind == "draft" else d,
        g,
        j,
        sample.text,
        sample.num_tokens,
        sample.finished,
        sample.stopped_early,
      )
    )
    samples[j] = sample
    if kind == "draft":
      p.add_draft(j, sample)
    elif len(samples) == n:
      complete([samples[i] for i in range(n)])

  @staticmethod
  def _requests(stage: str, p: PromptSearch):
    """(request id, samples, make(on_sample, indices) -> Request, complete(samples)) for each
    request of `stage` about prompt `p`."""
    s = p.search.settings
    if stage == "policy":
      yield (
        ("draft", None, None),
        len(p.tree.drafts),
        lambda on_sample, indices: p.draft_request(on_sample, indices=indices),
        None,
      )
      if p.measure_greedy:
        yield (
          ("greedy", None, None),
          1,
          lambda on_sample, indices: p.greedy_request(None, on_sample=on_sample),
          lambda samples: p.add_greedy(samples[0]),
        )
    elif stage == "feedback":
      for d in p.feedback_drafts():
        yield (
          ("feedback", d, None),
          s.feedback_samples,
          lambda on_sample, indices, d=d: p.feedback_request(d, None, on_sample, indices),
          lambda samples, d=d: p.add_feedback(d, samples),
        )
    elif stage == "edit":
      for d in range(len(p.tree.drafts)):
        for g in range(len(p.edit_groups(d))):
          yield (
            ("edit", d, g),
            s.num_edits,
            lambda on_sample, indices, d=d, g=g: p.edit_request(d, g, None, on_sample, indices),
            lambda samples, d=d, g=g: p.add_edits(d, g, samples),
          )

  # -- selection ----------------------------------------------------------------------------------

  def _enter_scoring(self, stage: str, prompts: list[PromptSearch]) -> bool:
    """Loads the selector for `stage` (rank or select); whether anything is to be scored."""
    search = self.search
    scores = search.selector is not None and search.settings.mode != "greedy" and bool(prompts)
    if scores:
      self._enter(stage)
    # The judge scores through its model's engine, as pipelined.
    if scores and search.selector is not None and search.judge_key is not None:
      judge_role = next(r for r in search.roles_in_use() if r.model_key == search.judge_key)
      search.selector.use_prefill(cast(Engine, search.engine(judge_role)).prefill)
    return scores

  def _rank(self, prompts: list[PromptSearch]) -> None:
    """Scores every draft, so the feedback stage knows the best ones. Scores are not written:
    a rerun scores again (a score depends on the draft alone)."""
    self._enter_scoring("rank", prompts)
    for p in prompts:
      for d in range(len(p.tree.drafts)):
        p.score_draft(d)

  def _select(
    self, prompts: list[PromptSearch], on_record: Optional[Callable[[dict[str, Any]], None]]
  ) -> list[dict[str, Any]]:
    self._enter_scoring("select", prompts)
    records = []
    for p in prompts:
      for d in range(len(p.tree.drafts)):
        if p.tree.draft(d).answer.score is None:  # not scored by the rank stage
          p.score_draft(d)
        for g in range(len(p.tree.draft(d).edit_groups)):
          p.score_edits(d, g)
      records.append(p.finish().to_record())
      if on_record is not None:
        on_record(records[-1])
    return records
