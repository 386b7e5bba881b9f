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

Each role sends its requests in its own `prompt_format` (formats/prompts.py). Work is batched
across all prompts of a call, stage by stage, so every generate call is as wide as the batch allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.sampling.generate import Sample, generate_samples, sampling_settings
from helpsteer_jax.scaling.feedback_filters import describe, get_rule
from helpsteer_jax.scaling.selectors import Selector

MODES = ("greedy", "best_of_n", "feedback_edit", "edit_without_feedback")
# The paper samples 10-64 feedbacks per draft to keep its effective ones; by default twice the
# number kept, and never more than this.
MAX_FEEDBACK_SAMPLES = 64


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

  def generate(self, conversations: Sequence[Conversation], stage: StageSampling, n: int, seed: int,
               batch_size: int, greedy: bool = False) -> list[list[Sample]]:
    if not conversations:
      return []
    settings = sampling_settings(
        self.tokenizer, max_new_tokens=stage.max_new_tokens,
        temperature=0.0 if greedy else stage.temperature,
        top_k=None if greedy else stage.top_k, top_p=None if greedy else stage.top_p,
    )
    return generate_samples(self.model, self.tokenizer, conversations, settings, n=n, seed=seed,
                            batch_size=batch_size)


def _sample_record(sample: Sample) -> dict[str, Any]:
  return {"text": sample.text, "num_tokens": sample.num_tokens, "finished": sample.finished}


class FeedbackEditSearch:
  """Runs the search for batches of prompts; `run` returns one JSON-ready record per prompt."""

  def __init__(self, settings: SearchSettings, policy: Role, selector: Optional[Selector] = None,
               feedback: Optional[Role] = None, edit: Optional[Role] = None):
    self.settings = settings
    self.policy = policy
    self.feedback = feedback or policy
    self.edit = edit or policy
    self.selector = selector
    self.rule = get_rule(settings.feedback_rule)
    templates.check_prompt_format(self.feedback.prompt_format, "feedback")
    templates.check_prompt_format(self.edit.prompt_format, "edit")
    if settings.mode in ("best_of_n", "feedback_edit", "edit_without_feedback") and selector is None:
      raise ValueError(f"search mode {settings.mode!r} needs a selector")

  def run(self, items: Sequence[PromptItem]) -> list[dict[str, Any]]:
    s = self.settings
    if not items:
      return []
    convs = [item.conversation for item in items]
    batch = s.batch_size
    seed = s.seed

    # 1. Drafts.
    greedy_mode = s.mode == "greedy"
    n_drafts = 1 if greedy_mode else s.num_drafts
    drafts = self.policy.generate(convs, s.draft, n_drafts, seed, batch, greedy=greedy_mode)
    records = [{
        "id": item.id, "conversation": item.conversation, "mode": s.mode,
        "roles": {"policy": self.policy.name, "feedback": self.feedback.name, "edit": self.edit.name,
                  "selector": None if self.selector is None else self.selector.name},
        "prompt_formats": {"feedback": self.feedback.prompt_format, "edit": self.edit.prompt_format},
        "drafts": [dict(_sample_record(d), feedbacks=[], edit_groups=[]) for d in per_prompt],
    } for item, per_prompt in zip(items, drafts)]

    # 2. Feedback, filtered into groups.
    if s.mode == "feedback_edit":
      pairs = [(p, d) for p, rec in enumerate(records) for d in range(len(rec["drafts"]))]
      fmt = self.feedback.prompt_format
      requests = [templates.feedback_request(convs[p], records[p]["drafts"][d]["text"], fmt)
                  for p, d in pairs]
      feedback = self.feedback.generate(requests, s.feedback, s.feedback_samples, seed + 1, batch)
      for (p, d), samples in zip(pairs, feedback):
        draft = records[p]["drafts"][d]
        texts = [x.text for x in samples]
        kept = self.rule(texts, s.num_feedbacks)
        for i, x in enumerate(samples):
          info = describe(x.text)
          draft["feedbacks"].append(dict(
              _sample_record(x), helpfulness=info.helpfulness, change_requests=info.change_requests,
              kept=i in kept, rank=kept.index(i) if i in kept else None))
        g = s.feedback_group_size
        draft["num_effective_feedbacks"] = len(kept)
        draft["edit_groups"] = [{"feedback": kept[i:i + g], "edits": []} for i in range(0, len(kept), g)]
    elif s.mode == "edit_without_feedback":
      for rec in records:
        for draft in rec["drafts"]:
          draft["edit_groups"] = [{"feedback": [], "edits": []}]

    # 3. Edits, K per group.
    slots = [(p, d, g) for p, rec in enumerate(records) for d, draft in enumerate(rec["drafts"])
             for g in range(len(draft["edit_groups"]))]
    if slots:
      requests = []
      for p, d, g in slots:
        draft = records[p]["drafts"][d]
        indices = draft["edit_groups"][g]["feedback"]
        if indices:
          requests.append(templates.edit_request(
              convs[p], draft["text"], [draft["feedbacks"][i]["text"] for i in indices],
              self.edit.prompt_format))
        else:
          requests.append(templates.revision_request(convs[p], draft["text"], self.edit.prompt_format))
      edits = self.edit.generate(requests, s.edit, s.num_edits, seed + 2, batch)
      for (p, d, g), samples in zip(slots, edits):
        records[p]["drafts"][d]["edit_groups"][g]["edits"] = [_sample_record(x) for x in samples]

    # 4. Selection over every candidate.
    candidates = [self._candidates(rec) for rec in records]
    if self.selector is not None and not greedy_mode:
      flat = [(p, ref) for p, cands in enumerate(candidates) for ref in cands]
      scores = self.selector.score([(convs[p], self._node(records[p], ref)["text"]) for p, ref in flat])
      for (p, ref), score in zip(flat, scores):
        self._node(records[p], ref)["score"] = score

    # 5. Greedy reference for the token multiple.
    greedy_tokens: list[Optional[int]] = [None] * len(records)
    if greedy_mode:
      greedy_tokens = [rec["drafts"][0]["num_tokens"] for rec in records]
    elif s.measure_greedy:
      greedy = self.policy.generate(convs, s.draft, 1, seed, batch, greedy=True)
      greedy_tokens = [g[0].num_tokens for g in greedy]
      for rec, g in zip(records, greedy):
        rec["greedy"] = _sample_record(g[0])

    for rec, cands, g_tokens in zip(records, candidates, greedy_tokens):
      self._finish(rec, cands, g_tokens)
    return records

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
