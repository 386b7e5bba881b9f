"""One prompt's search: its tree (scaling/tree.py), the requests each stage sends for it and a
named method for each stage's completion. When the requests run is the schedule's business
(scaling/search.py runs the stages of all prompts overlapped, scaling/staged.py one stage at a
time over all prompts); what a stage adds to the tree is the same under both.

Every sample's key derives from (seed, prompt id, stage, indices), so a tree does not depend on
the schedule, on what ran beside it, or on a resume.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Optional, Protocol

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.sampling.generate import Sample
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.scaling.feedback_filters import EARLY_REJECTS, FeedbackRule, describe
from helpsteer_jax.scaling.progress import StageProgress
from helpsteer_jax.scaling.remote_roles import AnyRequest, AnyRole
from helpsteer_jax.scaling.search_settings import SearchSettings
from helpsteer_jax.scaling.token_budget import budget_limit, expansion_order, next_expansion
from helpsteer_jax.scaling.tree import Draft, EditGroup, Feedback, Generated, PromptTree, counted_tokens
from helpsteer_jax.scoring.selectors import Selector

# Engine priorities: later stages first (a prompt's tree completes sooner and fewer prompts are in
# flight), the greedy reference last.
GREEDY_PRIORITY, DRAFT_PRIORITY, FEEDBACK_PRIORITY, EDIT_PRIORITY = -1, 0, 1, 2

OnSample = Callable[[int, Sample], None]  # (sample index, sample)
OnSamples = Callable[[list[Sample]], None]


class Search(Protocol):
  """What a prompt's search reads from the search over all prompts (scaling/search.py)."""

  settings: SearchSettings
  policy: AnyRole
  feedback: AnyRole
  edit: AnyRole
  selector: Optional[Selector]
  rule: FeedbackRule
  progress: StageProgress

  def prefixes(
    self, model_key: str, conversation: Conversation, prompt: "PromptSearch", d: Optional[int] = None
  ) -> list[tuple[int, ...]]: ...

  def score(self, prompt: "PromptSearch", nodes: Sequence[Generated], of_draft: Optional[int] = None) -> None: ...

  def engine(self, role: AnyRole): ...


class PromptSearch:
  """The tree of `item` under `search`'s settings and roles."""

  def __init__(self, search: Search, item: PromptItem):
    s = search.settings
    self.search = search
    self.item = item
    self.greedy_mode = s.mode == "greedy"
    self.measure_greedy = s.measure_greedy and not self.greedy_mode
    self.tree = PromptTree(
      id=item.id,
      conversation=item.conversation,
      mode=s.mode,
      roles={
        "policy": search.policy.name,
        "feedback": search.feedback.name,
        "edit": search.edit.name,
        "selector": None if search.selector is None else search.selector.name,
      },
      prompt_formats={"feedback": search.feedback.prompt_format, "edit": search.edit.prompt_format},
      drafts=[None] * (1 if self.greedy_mode else s.num_drafts),
      question_id=item.question_id if item.turn else None,
      turn=item.turn or None,
      endpoints={
        "draft": search.policy.served_by,
        "feedback": search.feedback.served_by,
        "edit": search.edit.served_by,
        "select": None if search.selector is None else getattr(search.selector, "served_by", "local"),
      },
    )
    # Token prefixes its prompts share, by (model key, draft or None): FeedbackEditSearch.prefixes.
    self.prefix_cache: dict[tuple[str, Optional[int]], tuple[int, ...]] = {}

  @property
  def conversation(self) -> Conversation:
    return self.item.conversation

  def key(self, *parts: object):
    return sample_key(self.search.settings.seed, self.item.id, *parts)

  # -- requests ---------------------------------------------------------------------------------

  def _request(
    self,
    role: AnyRole,
    conversation: Conversation,
    stage,
    n: int,
    key,
    tag: str,
    on_done: Optional[OnSamples],
    on_sample: Optional[OnSample],
    priority: int,
    draft: Optional[int] = None,
    indices: Sequence[int] = (),
    greedy: bool = False,
    stop_when: Optional[Callable[[str], bool]] = None,
  ) -> AnyRequest:
    prefixes = self.search.prefixes(role.model_key, self.conversation, self, draft)
    return role.request(
      conversation,
      stage,
      n,
      key,
      tag,
      on_done,
      greedy=greedy,
      on_sample=on_sample,
      priority=priority,
      prefixes=prefixes,
      indices=indices,
      stop_when=stop_when,
      stop_check_tokens=self.search.settings.early_exit_tokens,
    )

  def draft_request(
    self, on_sample: OnSample, on_done: Optional[OnSamples] = None, indices: Sequence[int] = ()
  ) -> AnyRequest:
    """The policy's drafts (the one greedy answer in greedy mode); `indices`: only these samples."""
    s = self.search.settings
    return self._request(
      self.search.policy,
      self.conversation,
      s.draft,
      len(self.tree.drafts),
      self.key("draft"),
      "draft",
      on_done,
      on_sample,
      DRAFT_PRIORITY,
      indices=indices,
      greedy=self.greedy_mode,
    )

  def greedy_request(
    self, on_done: Optional[OnSamples], on_sample: Optional[OnSample] = None, priority: int = GREEDY_PRIORITY
  ) -> AnyRequest:
    """The greedy reference: the token multiple's denominator."""
    return self._request(
      self.search.policy,
      self.conversation,
      self.search.settings.draft,
      1,
      self.key("greedy"),
      "greedy",
      on_done,
      on_sample,
      priority,
      greedy=True,
    )

  def feedback_request(
    self, d: int, on_done: Optional[OnSamples], on_sample: Optional[OnSample] = None, indices: Sequence[int] = ()
  ) -> AnyRequest:
    s, role = self.search.settings, self.search.feedback
    request = templates.feedback_request(self.conversation, self.tree.draft(d).answer.text, role.prompt_format)
    return self._request(
      role,
      request,
      s.feedback,
      s.feedback_samples,
      self.key("feedback", d),
      "feedback",
      on_done,
      on_sample,
      FEEDBACK_PRIORITY,
      draft=d,
      indices=indices,
      stop_when=EARLY_REJECTS.get(s.feedback_rule) if s.feedback_early_exit else None,
    )

  def edit_groups(self, d: int) -> list[EditGroup]:
    """The groups of draft `d` that its Edit requests answer: the kept feedback in groups, or in
    edit_without_feedback mode one revision without feedback (made on the first call)."""
    draft = self.tree.draft(d)
    if self.search.settings.mode == "edit_without_feedback" and not draft.edit_groups:
      draft.edit_groups = [EditGroup([])]
    return draft.edit_groups

  def edit_request(
    self,
    d: int,
    g: int,
    on_done: Optional[OnSamples],
    on_sample: Optional[OnSample] = None,
    indices: Sequence[int] = (),
  ) -> AnyRequest:
    s, role = self.search.settings, self.search.edit
    draft = self.tree.draft(d)
    if s.mode == "edit_without_feedback":
      request = templates.revision_request(self.conversation, draft.answer.text, role.prompt_format)
    else:
      texts = [draft.feedbacks[i].text for i in draft.edit_groups[g].feedback]
      request = templates.edit_request(self.conversation, draft.answer.text, texts, role.prompt_format)
    return self._request(
      role,
      request,
      s.edit,
      s.num_edits,
      self.key("edit", d, g),
      "edit",
      on_done,
      on_sample,
      EDIT_PRIORITY,
      draft=d,
      indices=indices,
    )

  # -- stage completions --------------------------------------------------------------------------

  def add_draft(self, d: int, sample: Sample) -> Draft:
    draft = self.tree.drafts[d] = Draft(Generated.of(sample))
    self.search.progress.add("draft", 1, sample.num_tokens)
    return draft

  def add_greedy(self, sample: Sample) -> None:
    self.tree.greedy = Generated.of(sample)
    self.search.progress.add("greedy", 1, sample.num_tokens)

  def add_feedback(self, d: int, samples: list[Sample]) -> None:
    """Draft `d`'s sampled feedback, filtered by the rule into its edit groups."""
    s = self.search.settings
    draft = self.tree.draft(d)
    self.search.progress.add("feedback", len(samples), sum(x.num_tokens for x in samples))
    kept = self.search.rule([x.text for x in samples], s.num_feedbacks)
    for i, x in enumerate(samples):
      info = describe(x.text)
      draft.feedbacks.append(
        Feedback(
          x.text,
          x.num_tokens,
          x.finished,
          info.helpfulness,
          info.change_requests,
          i in kept,
          kept.index(i) if i in kept else None,
          x.stopped_early,
        )
      )
    g = s.feedback_group_size
    draft.num_effective_feedbacks = len(kept)
    groups = [EditGroup(kept[i : i + g]) for i in range(0, len(kept), g)]
    draft.edit_groups = groups[:1] if s.edits_from == "top_group" else groups

  def feedback_drafts(self) -> list[int]:
    """The drafts that get feedback: every draft, or the best `feedback_drafts` by their scores
    (ties to the earlier draft), which must all be scored."""
    s = self.search.settings
    drafts = range(len(self.tree.drafts))
    if not s.feedback_on_top_drafts:
      return list(drafts)
    scores: list[float] = []
    for d in drafts:
      score = self.tree.draft(d).answer.score
      if score is None:
        raise RuntimeError(f"prompt {self.item.id}: feedback_drafts={s.feedback_drafts} needs every draft scored first")
      scores.append(score)
    return sorted(sorted(drafts, key=lambda d: -scores[d])[: s.feedback_drafts])

  def add_edits(self, d: int, g: int, samples: list[Sample]) -> list[Generated]:
    edits = self.tree.draft(d).edit_groups[g].edits = [Generated.of(x) for x in samples]
    self.search.progress.add("edit", len(samples), sum(x.num_tokens for x in samples))
    return edits

  def score_draft(self, d: int) -> None:
    self.search.score(self, [self.tree.draft(d).answer], of_draft=d)

  def score_edits(self, d: int, g: int) -> None:
    self.search.score(self, self.tree.draft(d).edit_groups[g].edits)

  def finish(self) -> PromptTree:
    """The choice among the candidates, the token account and the feedback counts."""
    s, tree = self.search.settings, self.tree
    cands = tree.candidates(s.select_drafts)
    best_ref = max(cands, key=lambda ref: (_or_lowest(tree.node(ref).score), -cands.index(ref)))
    best = tree.node(best_ref)
    tree.best = {
      "text": best.text,
      "score": best.score,
      "draft": best_ref[0],
      "group": best_ref[1],
      "edit": best_ref[2],
    }
    drafts = [tree.draft(d) for d in range(len(tree.drafts))]
    tokens = tree.generated_tokens()
    greedy_tokens: Optional[int] = None
    if self.greedy_mode:
      greedy_tokens = drafts[0].answer.num_tokens
    elif self.measure_greedy:
      if tree.greedy is None:
        raise RuntimeError(f"prompt {self.item.id}: the greedy reference is not sampled yet")
      greedy_tokens = tree.greedy.num_tokens
    tree.tokens = dict(tokens, greedy=greedy_tokens)
    tree.token_multiple = None if not greedy_tokens else counted_tokens(tokens, s.token_account) / greedy_tokens
    tree.num_candidates = len(cands)
    if s.mode == "feedback_edit":
      per_draft = [d.num_effective_feedbacks or 0 for d in drafts]
      tree.effective_feedbacks = {
        "per_draft": per_draft,
        "total": sum(per_draft),
        "sampled_per_draft": s.feedback_samples,  # F, the cap
        "sampled": [len(d.feedbacks) for d in drafts],  # drawn (fewer than F in waves)
        "stopped_early": sum(f.stopped_early for d in drafts for f in d.feedbacks),
      }
    return tree


def _or_lowest(score: Optional[float]) -> float:
  return float("-inf") if score is None else score


class PipelinedPrompt(PromptSearch):
  """The pipelined schedule's prompt: each completion sends the next stage's requests at once
  (a draft's feedback as soon as the draft is written, its edits as soon as its feedback is
  filtered) and scores candidates as they arrive; `on_finished(self)` once its tree is complete."""

  def __init__(self, search: Search, item: PromptItem, on_finished: Callable[["PipelinedPrompt"], None]):
    super().__init__(search, item)
    self.on_finished = on_finished
    self.outstanding = 0
    self.waves: dict[int, list[Sample]] = {}  # feedback drawn so far, by draft (waves only)
    # Drafts expanded one at a time (search.token_budget, settle_margin: scaling/token_budget.py):
    # whether every draft is in, the draft being expanded and the drafts expanded so far.
    self.drafts_in = False
    self.expanding: Optional[int] = None
    self.expanded: list[int] = []

  def start(self) -> None:
    self._submit(self.search.policy, self.draft_request(self.on_draft, self.on_drafts))
    if self.measure_greedy:
      # Depends on nothing and, but for a token budget, nothing depends on it: it fills slots the
      # search leaves idle.
      budget = self.search.settings.token_budget
      priority = DRAFT_PRIORITY if budget else GREEDY_PRIORITY
      self._submit(self.search.policy, self.greedy_request(self.on_greedy, priority=priority))

  def _submit(self, role: AnyRole, request: AnyRequest) -> None:
    self.outstanding += 1
    self.search.engine(role).submit(request)

  def _done_one(self) -> None:
    self.outstanding -= 1
    if self.outstanding == 0:
      self.finish()
      self.on_finished(self)

  def on_draft(self, d: int, sample: Sample) -> None:
    self.add_draft(d, sample)
    self.score_draft(d)
    s = self.search.settings
    if not s.budgeted and not s.feedback_on_top_drafts:  # else the drafts are ranked first
      self._expand(d)

  def _expand(self, d: int) -> None:
    """Draft `d`'s feedback (then its edits), or in edit_without_feedback mode its edit."""
    s = self.search.settings
    if s.mode == "feedback_edit":
      self._submit_feedback(d)
    elif s.mode == "edit_without_feedback":
      self.edit_groups(d)
      self._submit(self.search.edit, self.edit_request(d, 0, lambda samples: self.on_edits(d, 0, samples)))

  def on_draft_expanded(self, d: int) -> None:
    """Draft `d`'s edits are all scored (or its feedback kept none): the next expansion, when
    drafts are expanded one at a time. Called before the completion's `_done_one`."""
    if self.search.settings.budgeted and self.expanding == d:
      self.expanding = None
      self._expand_next()

  def _expand_next(self) -> None:
    """The next draft's expansion under the budget or margin, once every draft and the greedy
    answer (for a budget) are in and no expansion is running; else, with none left, the record
    of why."""
    s = self.search.settings
    if not self.drafts_in or self.expanding is not None or self.tree.budget is not None:
      return
    if s.token_budget and self.tree.greedy is None:
      return  # on_greedy comes back here
    drafts = self.feedback_drafts() if s.feedback_on_top_drafts else range(len(self.tree.drafts))
    d, why = next_expansion(self.tree, expansion_order(self.tree, drafts), self.expanded, s)
    if d is None:
      self.tree.budget = {
        "token_budget": s.token_budget,
        "settle_margin": s.settle_margin,
        "limit_tokens": budget_limit(self.tree, s),
        "expanded": list(self.expanded),
        "stopped": why,
      }
      return
    self.expanding = d
    self.expanded.append(d)
    self._expand(d)

  def on_drafts(self, samples: list[Sample]) -> None:
    """Every draft written and scored: feedback for the best ones, when only those get it, or
    the first expansion under a budget or margin."""
    s = self.search.settings
    self.drafts_in = True
    if s.budgeted:
      self._expand_next()
    elif s.feedback_on_top_drafts:
      for d in self.feedback_drafts():
        self._submit_feedback(d)
    self._done_one()

  def _submit_feedback(self, d: int) -> None:
    if self.search.settings.feedback_sampling == "waves":
      self.waves[d] = []
      self._submit_wave(d)
      return
    self._submit(self.search.feedback, self.feedback_request(d, lambda samples: self.on_feedback(d, samples)))

  def _submit_wave(self, d: int) -> None:
    """The next wave of draft `d`'s feedback: samples drawn .. drawn + wave (at most F)."""
    s = self.search.settings
    start = len(self.waves[d])
    indices = range(start, min(start + s.wave_size, s.feedback_samples))
    self._submit(
      self.search.feedback,
      self.feedback_request(d, lambda samples: self.on_wave(d, samples), indices=list(indices)),
    )

  def on_wave(self, d: int, samples: list[Sample]) -> None:
    """A wave done: the rule over every feedback drawn so far; another wave unless M are kept
    (the rule ranks only what was drawn: a later sample could have outranked a kept one) or F
    are drawn."""
    s = self.search.settings
    drawn = self.waves[d]
    drawn.extend(samples)
    if (
      len(drawn) < s.feedback_samples
      and len(self.search.rule([x.text for x in drawn], s.num_feedbacks)) < s.num_feedbacks
    ):
      self._submit_wave(d)  # before this wave's _done_one, so the prompt never looks finished
      self._done_one()
      return
    del self.waves[d]
    self.on_feedback(d, drawn)

  def on_feedback(self, d: int, samples: list[Sample]) -> None:
    self.add_feedback(d, samples)
    groups = self.tree.draft(d).edit_groups
    for g in range(len(groups)):
      self._submit(self.search.edit, self.edit_request(d, g, functools.partial(self.on_edits, d, g)))
    if not groups:
      self.on_draft_expanded(d)
    self._done_one()

  def on_edits(self, d: int, g: int, samples: list[Sample]) -> None:
    self.add_edits(d, g, samples)
    self.score_edits(d, g)
    if all(group.edits for group in self.tree.draft(d).edit_groups):
      self.on_draft_expanded(d)
    self._done_one()

  def on_greedy(self, samples: list[Sample]) -> None:
    self.add_greedy(samples[0])
    if self.search.settings.token_budget:
      self._expand_next()
    self._done_one()
