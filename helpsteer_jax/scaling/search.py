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

Each role sends its requests in its own `prompt_format` (formats/prompts.py). All stages of all
prompts in flight share one decode engine per model, each request entering as soon as the stage
before it has finished for that prompt (see `FeedbackEditSearch`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.generate import Sample, encode_conversations, sampling_settings, to_sample
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.scaling.feedback_filters import describe, get_rule
from helpsteer_jax.scaling.prefix_breaks import PROBES, SharedPrefixes, breaks_for
from helpsteer_jax.scaling.progress import StageProgress
from helpsteer_jax.scaling.selectors import Selector

MODES = ("greedy", "best_of_n", "feedback_edit", "edit_without_feedback")
# The paper samples 10-64 feedbacks per draft to keep its effective ones; by default twice the
# number kept, and never more than this.
MAX_FEEDBACK_SAMPLES = 64
# Engine priorities: later stages first (a prompt's tree completes sooner and fewer prompts are in
# flight), the greedy reference last.
GREEDY_PRIORITY, DRAFT_PRIORITY, FEEDBACK_PRIORITY, EDIT_PRIORITY = -1, 0, 1, 2


def default_feedback_samples(num_feedbacks: int) -> int:
  """Feedbacks sampled per draft to keep `num_feedbacks` effective ones: 2M, at most 64, at
  least M."""
  return max(num_feedbacks, min(2 * num_feedbacks, MAX_FEEDBACK_SAMPLES))


@dataclasses.dataclass(frozen=True)
class StageSampling:
  temperature: float = 0.7
  top_p: Optional[float] = 0.95
  top_k: Optional[int] = None
  max_new_tokens: int = 256


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  mode: str = "feedback_edit"
  num_drafts: int = 2  # N
  num_feedbacks: int = 2  # M, effective feedbacks kept per draft after the rule
  num_feedback_samples: int = 0  # F, sampled per draft; 0 = default_feedback_samples(M)
  feedback_group_size: int = 3  # feedbacks shown together to one edit
  num_edits: int = 1  # K, per feedback group
  feedback_rule: str = "constructive"
  draft: StageSampling = StageSampling()
  feedback: StageSampling = StageSampling()
  edit: StageSampling = StageSampling()
  select_drafts: bool = True  # drafts compete with edits in the final choice
  measure_greedy: bool = True  # one greedy answer per prompt: the token-multiple denominator
  batch_size: int = 16
  seed: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"search mode {self.mode!r}; expected one of {MODES}")
    for name in ("num_drafts", "num_feedbacks", "feedback_group_size", "num_edits", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)}; expected at least 1")
    if self.num_feedback_samples and self.num_feedback_samples < self.num_feedbacks:
      raise ValueError(
          f"num_feedback_samples={self.num_feedback_samples} < num_feedbacks={self.num_feedbacks}: "
          "cannot keep more effective feedbacks than are sampled (0 = the default, "
          f"{default_feedback_samples(self.num_feedbacks)})")
    if self.num_feedback_samples < 0:
      raise ValueError(f"num_feedback_samples={self.num_feedback_samples}; expected 0 (default) or more")
    get_rule(self.feedback_rule)  # fails early on an unknown rule name

  @property
  def feedback_samples(self) -> int:
    """F: feedbacks sampled per draft."""
    return self.num_feedback_samples or default_feedback_samples(self.num_feedbacks)


@dataclasses.dataclass
class Role:
  """A model playing one role of the search (policy, feedback, edit) in its prompt layout."""

  name: str
  model: Any
  tokenizer: Any
  prompt_format: str = "plain"

  def encode(self, conversation: Conversation) -> list[int]:
    """The prompt ids this role's requests send for `conversation`."""
    return encode_conversations(self.tokenizer, [conversation])[0]

  def request(self, conversation: Conversation, stage: StageSampling, n: int, key, tag: str,
              on_done, greedy: bool = False, on_sample=None, priority: int = 0,
              prefixes: Sequence[Sequence[int]] = ()) -> Request:
    """A request whose callbacks receive `Sample`s: `on_done(samples)`, `on_sample(j, sample)`.
    Its prefill chunks break where the prompt stops matching one of `prefixes`
    (scaling/prefix_breaks.py)."""
    settings = sampling_settings(
        self.tokenizer, max_new_tokens=stage.max_new_tokens,
        temperature=0.0 if greedy else stage.temperature,
        top_k=None if greedy else stage.top_k, top_p=None if greedy else stage.top_p,
    )
    prompt = self.encode(conversation)
    sample = lambda tokens: to_sample(self.tokenizer, tokens, settings)
    return Request(prompt, settings, key, n=n, tag=tag, priority=priority,
                   prefill_breaks=breaks_for(prompt, prefixes),
                   on_done=lambda request, tokens: on_done([sample(t) for t in tokens]),
                   on_sample=None if on_sample is None else
                   lambda request, j, tokens: on_sample(j, sample(tokens)))


def _sample_record(sample: Sample) -> dict[str, Any]:
  return {"text": sample.text, "num_tokens": sample.num_tokens, "finished": sample.finished}


class FeedbackEditSearch:
  """Runs the search over prompts; `run` returns one JSON-ready record per prompt.

  Every stage of every prompt shares one decode engine per model (sampling/engine.py), fed as work
  becomes ready: a prompt's feedback requests enter as soon as its drafts finish, its edits as
  soon as its feedback is filtered, and the selector scores each candidate as it completes. New
  prompts are admitted while the engine would otherwise leave slots idle. Each sample's random key
  derives from (seed, prompt id, stage, candidate index), so a prompt's whole tree is the same
  whatever else runs beside it."""

  def __init__(self, settings: SearchSettings, policy: Role, selector: Optional[Selector] = None,
               feedback: Optional[Role] = None, edit: Optional[Role] = None,
               progress: Optional[StageProgress] = None):
    self.settings = settings
    self.policy = policy
    self.feedback = feedback or policy
    self.edit = edit or policy
    self.selector = selector
    self.rule = get_rule(settings.feedback_rule)
    self._engines: dict[int, Engine] = {}
    self._judge_model = None  # the model whose engine's prefill the judge scores through
    self._shared: Optional[dict[int, SharedPrefixes]] = None  # by id(model)
    self._select_s = 0.0
    self.progress = progress or StageProgress()
    templates.check_prompt_format(self.feedback.prompt_format, "feedback")
    templates.check_prompt_format(self.edit.prompt_format, "edit")
    if settings.mode in ("best_of_n", "feedback_edit", "edit_without_feedback") and selector is None:
      raise ValueError(f"search mode {settings.mode!r} needs a selector")

  def engine(self, role: Role) -> Engine:
    """The engine of a role's model: roles played by one model share it."""
    key = id(role.model)
    if key not in self._engines:
      base = sampling_settings(role.tokenizer)
      engine = self._engines[key] = Engine(role.model, EngineSettings(
          num_slots=self.settings.batch_size, stop_token_ids=base.stop_token_ids, pad_id=base.pad_id))
      # A judge over the same model scores through the engine's kept prompt chunks.
      share = getattr(self.selector, "share_prefill", None)
      if share is not None and share(role.model, engine.prefill):
        self._judge_model = role.model
    return self._engines[key]

  def _roles_in_use(self) -> list[Role]:
    mode = self.settings.mode
    return [self.policy] + ([self.feedback] if mode == "feedback_edit" else []) + (
        [self.edit] if mode in ("feedback_edit", "edit_without_feedback") else [])

  def shared_prefixes(self) -> dict[int, SharedPrefixes]:
    """By id(model), how the prompts that model's engine prefills about a draft are probed for
    their shared prefixes (scaling/prefix_breaks.py): the roles and judge that run on it."""
    if self._shared is None:
      for role in self._roles_in_use():  # the judge shares the prefill of the first engine on its model
        self.engine(role)
      s, fb, ed = self.settings, self.feedback, self.edit
      builders: dict[int, dict] = {}
      probes: dict[int, list] = {}
      if s.mode == "feedback_edit":
        builders.setdefault(id(fb.model), {})["feedback"] = (
            lambda c, r: fb.encode(templates.feedback_request(c, r, fb.prompt_format)))
        edit_ids = lambda c, r, f: ed.encode(templates.edit_request(c, r, [f], ed.prompt_format))
        builders.setdefault(id(ed.model), {})["edit"] = lambda c, r: edit_ids(c, r, PROBES[0])
        probes.setdefault(id(ed.model), []).append(edit_ids)
      elif s.mode == "edit_without_feedback":
        builders.setdefault(id(ed.model), {})["edit"] = (
            lambda c, r: ed.encode(templates.revision_request(c, r, ed.prompt_format)))
      if self._judge_model is not None and s.mode != "greedy":
        builders.setdefault(id(self._judge_model), {})["judge"] = self.selector.prompt_ids
      self._shared = {m: SharedPrefixes(b, probes.get(m, ())) for m, b in builders.items()}
    return self._shared

  def stats(self) -> dict[str, Any]:
    """Each engine's slot use and per-stage tokens, and the seconds spent selecting."""
    names = {}
    for role in (self.policy, self.feedback, self.edit):
      names.setdefault(id(role.model), role.name)
    return {"engines": {names[k]: e.stats() for k, e in self._engines.items()},
            "select_seconds": self._select_s}

  def run(self, items: Sequence[PromptItem],
          on_record: Optional[Callable[[dict[str, Any]], None]] = None,
          min_in_flight: int = 1, max_in_flight: int = 0) -> list[dict[str, Any]]:
    """Records in the order of `items`. `on_record` receives each record, also in that order, as
    soon as it and every earlier one are complete; at least `min_in_flight` prompts are admitted
    at a time, and more while the policy's engine has free slots, up to `max_in_flight` (0: no
    cap)."""
    if not items:
      return []
    records: list[Optional[dict[str, Any]]] = [None] * len(items)
    complete = [False] * len(items)
    emitted = 0
    admitted = 0
    open_prompts = 0
    policy_engine = self.engine(self.policy)

    def finished(p: int) -> None:
      nonlocal emitted, open_prompts
      complete[p] = True
      open_prompts -= 1
      while emitted < len(items) and complete[emitted]:
        if on_record is not None:
          on_record(records[emitted])
        emitted += 1

    while admitted < len(items) or any(e.busy for e in self._engines.values()):
      while admitted < len(items) and (not max_in_flight or open_prompts < max_in_flight) and (
          open_prompts < min_in_flight
          or policy_engine.queued_samples(min_priority=0) < policy_engine.free_slots):
        records[admitted] = self._start(admitted, items[admitted], finished)
        admitted += 1
        open_prompts += 1
      for engine in list(self._engines.values()):
        if engine.busy:
          engine.step()
    return records

  # -- one prompt's tree, stage by stage ---------------------------------------------------------

  def _start(self, p: int, item: PromptItem, finished) -> dict[str, Any]:
    s = self.settings
    greedy_mode = s.mode == "greedy"
    conv = item.conversation
    rec = {
        "id": item.id, "conversation": conv, "mode": s.mode,
        "roles": {"policy": self.policy.name, "feedback": self.feedback.name, "edit": self.edit.name,
                  "selector": None if self.selector is None else self.selector.name},
        "prompt_formats": {"feedback": self.feedback.prompt_format, "edit": self.edit.prompt_format},
        "drafts": [],
    }
    outstanding = [0]
    measure_greedy = s.measure_greedy and not greedy_mode

    def key(*parts):
      return sample_key(s.seed, item.id, *parts)

    # Token prefixes the prompts about this conversation (and about each draft) share, by model:
    # each prompt's prefill chunks break where it stops matching one.
    shared = self.shared_prefixes()
    conv_prefix = {m: p.of_conversation(conv) for m, p in shared.items()}
    draft_prefix: dict[tuple[int, int], tuple[int, ...]] = {}

    def prefixes(model, d: Optional[int] = None) -> list[tuple[int, ...]]:
      m = id(model)
      if m not in shared:
        return []
      return [conv_prefix[m]] + ([draft_prefix[m, d]] if d is not None else [])

    def submit(role: Role, request: Request) -> None:
      outstanding[0] += 1
      self.engine(role).submit(request)

    def done_one() -> None:
      outstanding[0] -= 1
      if outstanding[0] == 0:
        self._finish(rec, self._candidates(rec), rec["drafts"][0]["num_tokens"] if greedy_mode
                     else rec["greedy"]["num_tokens"] if measure_greedy else None)
        finished(p)

    def score(nodes: list[dict[str, Any]], of_draft: Optional[int] = None) -> None:
      """Scores `nodes`: the drafts themselves when `of_draft` names one (their judge prompt shares
      the draft with its Feedback and Edit prompts), else edits."""
      if self.selector is None or greedy_mode:
        return
      started = time.perf_counter()
      for node in nodes:  # one at a time: a score never depends on what it was batched with
        items = [(conv, node["text"])]
        if self._judge_model is None:
          node["score"] = self.selector.score(items)[0]
        else:
          node["score"] = self.selector.score(items, prefixes(self._judge_model, of_draft))[0]
      self._select_s += time.perf_counter() - started
      self.progress.add_scored(len(nodes))

    n_drafts = 1 if greedy_mode else s.num_drafts
    rec["drafts"] = [None] * n_drafts

    def on_draft(d: int, sample: Sample) -> None:
      # Each draft's feedback (or revision) enters as soon as that draft is written.
      draft = rec["drafts"][d] = dict(_sample_record(sample), feedbacks=[], edit_groups=[])
      for m, p in shared.items():
        draft_prefix[m, d] = p.of_response(conv, draft["text"])
      self.progress.add("draft", 1, sample.num_tokens)
      score([draft], of_draft=d)
      if s.mode == "feedback_edit":
        request = templates.feedback_request(conv, draft["text"], self.feedback.prompt_format)
        submit(self.feedback, self.feedback.request(
            request, s.feedback, s.feedback_samples, key("feedback", d), "feedback",
            lambda samples: on_feedback(d, samples), priority=FEEDBACK_PRIORITY,
            prefixes=prefixes(self.feedback.model, d)))
      elif s.mode == "edit_without_feedback":
        draft["edit_groups"] = [{"feedback": [], "edits": []}]
        request = templates.revision_request(conv, draft["text"], self.edit.prompt_format)
        submit(self.edit, self.edit.request(request, s.edit, s.num_edits, key("edit", d, 0), "edit",
                                            lambda samples: on_edits(d, 0, samples),
                                            priority=EDIT_PRIORITY, prefixes=prefixes(self.edit.model, d)))

    def on_feedback(d: int, samples: list[Sample]) -> None:
      draft = rec["drafts"][d]
      self.progress.add("feedback", len(samples), sum(x.num_tokens for x in samples))
      kept = self.rule([x.text for x in samples], s.num_feedbacks)
      for i, x in enumerate(samples):
        info = describe(x.text)
        draft["feedbacks"].append(dict(
            _sample_record(x), helpfulness=info.helpfulness, change_requests=info.change_requests,
            kept=i in kept, rank=kept.index(i) if i in kept else None))
      g = s.feedback_group_size
      draft["num_effective_feedbacks"] = len(kept)
      draft["edit_groups"] = [{"feedback": kept[i:i + g], "edits": []} for i in range(0, len(kept), g)]
      for group_index, group in enumerate(draft["edit_groups"]):
        request = templates.edit_request(conv, draft["text"],
                                         [draft["feedbacks"][i]["text"] for i in group["feedback"]],
                                         self.edit.prompt_format)
        submit(self.edit, self.edit.request(
            request, s.edit, s.num_edits, key("edit", d, group_index), "edit",
            lambda samples, g=group_index: on_edits(d, g, samples), priority=EDIT_PRIORITY,
            prefixes=prefixes(self.edit.model, d)))
      done_one()

    def on_edits(d: int, g: int, samples: list[Sample]) -> None:
      edits = [_sample_record(x) for x in samples]
      self.progress.add("edit", len(samples), sum(x.num_tokens for x in samples))
      rec["drafts"][d]["edit_groups"][g]["edits"] = edits
      score(edits)
      done_one()

    def on_greedy(samples: list[Sample]) -> None:
      rec["greedy"] = _sample_record(samples[0])
      self.progress.add("greedy", 1, samples[0].num_tokens)
      done_one()

    submit(self.policy, self.policy.request(conv, s.draft, n_drafts, key("draft"), "draft",
                                            lambda samples: done_one(), greedy=greedy_mode,
                                            priority=DRAFT_PRIORITY,
                                            on_sample=on_draft))
    if measure_greedy:
      # The greedy reference (the token multiple's denominator) depends on nothing and nothing
      # depends on it: it fills slots the search leaves idle.
      submit(self.policy, self.policy.request(conv, s.draft, 1, key("greedy"), "greedy", on_greedy,
                                              greedy=True, priority=GREEDY_PRIORITY))
    return rec

  # -- tree helpers -----------------------------------------------------------------------------

  def _candidates(self, rec: dict[str, Any]) -> list[tuple[int, Optional[int], Optional[int]]]:
    """(draft, group, edit) references; group/edit None for a draft itself."""
    refs = []
    for d, draft in enumerate(rec["drafts"]):
      has_edits = any(group["edits"] for group in draft["edit_groups"])
      if self.settings.select_drafts or not has_edits:
        refs.append((d, None, None))
      for g, group in enumerate(draft["edit_groups"]):
        refs.extend((d, g, e) for e in range(len(group["edits"])))
    return refs

  @staticmethod
  def _node(rec: dict[str, Any], ref: tuple[int, Optional[int], Optional[int]]) -> dict[str, Any]:
    d, g, e = ref
    draft = rec["drafts"][d]
    return draft if g is None else draft["edit_groups"][g]["edits"][e]

  def _finish(self, rec, cands, greedy_tokens: Optional[int]) -> None:
    best_ref = max(cands, key=lambda ref: (self._node(rec, ref).get("score", float("-inf")), -cands.index(ref)))
    best = self._node(rec, best_ref)
    rec["best"] = {"text": best["text"], "score": best.get("score"),
                   "draft": best_ref[0], "group": best_ref[1], "edit": best_ref[2]}
    drafts = sum(d["num_tokens"] for d in rec["drafts"])
    feedback = sum(f["num_tokens"] for d in rec["drafts"] for f in d["feedbacks"])
    edits = sum(e["num_tokens"] for d in rec["drafts"] for g in d["edit_groups"] for e in g["edits"])
    total = drafts + feedback + edits
    rec["tokens"] = {"drafts": drafts, "feedback": feedback, "edits": edits, "total": total,
                     "greedy": greedy_tokens}
    rec["token_multiple"] = None if not greedy_tokens else total / greedy_tokens
    rec["num_candidates"] = len(cands)
    if self.settings.mode == "feedback_edit":
      per_draft = [d.get("num_effective_feedbacks", 0) for d in rec["drafts"]]
      rec["effective_feedbacks"] = {"per_draft": per_draft, "total": sum(per_draft),
                                    "sampled_per_draft": self.settings.feedback_samples}
