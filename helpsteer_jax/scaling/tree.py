"""One prompt's search tree as typed records: drafts, their feedback, edit groups and edits, the
greedy reference and the choice. `PromptTree.to_record()` is the line `results.jsonl` holds (its
fields and their order), and `PromptTree.from_record` reads one back.

A node is None in a record only where it does not apply: `score` without a selector, `greedy`
without the greedy reference, `num_effective_feedbacks` and `effective_feedbacks` outside the
feedback_edit mode. Such fields are left out of the record, as they always were.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from helpsteer_jax.formats.messages import Conversation
from helpsteer_jax.sampling.generate import Sample


@dataclasses.dataclass
class Generated:
  """A sampled answer (a draft's text, an edit, the greedy answer) and its selector score."""

  text: str
  num_tokens: int
  finished: bool
  score: Optional[float] = None

  @classmethod
  def of(cls, sample: Sample) -> "Generated":
    return cls(sample.text, sample.num_tokens, sample.finished)

  def to_record(self) -> dict[str, Any]:
    out = {"text": self.text, "num_tokens": self.num_tokens, "finished": self.finished}
    if self.score is not None:
      out["score"] = self.score
    return out

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "Generated":
    return cls(r["text"], r["num_tokens"], r["finished"], r.get("score"))


@dataclasses.dataclass
class Feedback:
  """A sampled feedback on a draft, what the rule read from it and whether it was kept."""

  text: str
  num_tokens: int
  finished: bool
  helpfulness: Optional[int]
  change_requests: int
  kept: bool
  rank: Optional[int]  # place among the kept, best first
  stopped_early: bool = False  # its opening failed the rule: decoding stopped there

  def to_record(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "Feedback":
    return cls(**{f.name: r[f.name] for f in dataclasses.fields(cls) if f.name in r or f.name != "stopped_early"})


@dataclasses.dataclass
class EditGroup:
  """Kept feedbacks shown together to one Edit request (indices into the draft's feedbacks) and
  the edits it returned."""

  feedback: list[int]
  edits: list[Generated] = dataclasses.field(default_factory=list)

  def to_record(self) -> dict[str, Any]:
    return {"feedback": list(self.feedback), "edits": [e.to_record() for e in self.edits]}

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "EditGroup":
    return cls(list(r["feedback"]), [Generated.from_record(e) for e in r["edits"]])


@dataclasses.dataclass
class Draft:
  answer: Generated
  feedbacks: list[Feedback] = dataclasses.field(default_factory=list)
  edit_groups: list[EditGroup] = dataclasses.field(default_factory=list)
  num_effective_feedbacks: Optional[int] = None

  def to_record(self) -> dict[str, Any]:
    a = self.answer
    out: dict[str, Any] = {
      "text": a.text,
      "num_tokens": a.num_tokens,
      "finished": a.finished,
      "feedbacks": [f.to_record() for f in self.feedbacks],
      "edit_groups": [g.to_record() for g in self.edit_groups],
    }
    if a.score is not None:
      out["score"] = a.score
    if self.num_effective_feedbacks is not None:
      out["num_effective_feedbacks"] = self.num_effective_feedbacks
    return out

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "Draft":
    return cls(
      Generated.from_record(r),
      [Feedback.from_record(f) for f in r["feedbacks"]],
      [EditGroup.from_record(g) for g in r["edit_groups"]],
      r.get("num_effective_feedbacks"),
    )


def counted_tokens(tokens: dict, account: str) -> int:
  """The generated tokens a token account counts (search_settings.TOKEN_ACCOUNTS) of a record's
  `tokens`: every stage's (generated), or the drafts' and edits' only (responses)."""
  return tokens["total"] if account == "generated" else tokens["drafts"] + tokens["edits"]


# A candidate of the final choice: (draft, group, edit), group and edit None for the draft itself.
CandidateRef = tuple[int, Optional[int], Optional[int]]


@dataclasses.dataclass
class PromptTree:
  """The whole search for one prompt. `drafts` holds None for a draft not yet written."""

  id: str
  conversation: Conversation
  mode: str
  roles: dict[str, Optional[str]]
  prompt_formats: dict[str, str]
  drafts: list[Optional[Draft]]
  greedy: Optional[Generated] = None
  best: Optional[dict[str, Any]] = None
  tokens: Optional[dict[str, Optional[int]]] = None
  token_multiple: Optional[float] = None
  num_candidates: Optional[int] = None
  effective_feedbacks: Optional[dict[str, Any]] = None
  # A turn of a multi-turn question (MT-Bench): its question's id and the turn, 1-based; None for
  # a single-turn prompt, whose record then has neither field.
  question_id: Optional[str] = None
  turn: Optional[int] = None
  # What served each stage (draft, feedback, edit, select): "local", or a remote role's
  # "openai:<base_url>#<model>" (scaling/remote_roles.py).
  endpoints: Optional[dict[str, Optional[str]]] = None
  # Under a token budget or settling margin (scaling/token_budget.py): the budget, the drafts
  # expanded in order and why expansion stopped.
  budget: Optional[dict[str, Any]] = None

  def draft(self, d: int) -> Draft:
    draft = self.drafts[d]
    if draft is None:
      raise ValueError(f"prompt {self.id}: draft {d} is not written yet")
    return draft

  def node(self, ref: CandidateRef) -> Generated:
    d, g, e = ref
    draft = self.draft(d)
    # (d, None, None) is the draft itself; an edit's ref names both its group and its index.
    return draft.answer if g is None or e is None else draft.edit_groups[g].edits[e]

  def generated_tokens(self) -> dict[str, int]:
    """Tokens generated so far by stage (drafts written, feedback, edits) and in all."""
    drafts = [d for d in self.drafts if d is not None]
    tokens = {
      "drafts": sum(d.answer.num_tokens for d in drafts),
      "feedback": sum(f.num_tokens for d in drafts for f in d.feedbacks),
      "edits": sum(e.num_tokens for d in drafts for g in d.edit_groups for e in g.edits),
    }
    tokens["total"] = tokens["drafts"] + tokens["feedback"] + tokens["edits"]
    return tokens

  def candidates(self, select_drafts: bool) -> list[CandidateRef]:
    """Every answer the selector chooses among: drafts (unless `select_drafts` is off and the draft
    has edits), then each draft's edits group by group."""
    refs: list[CandidateRef] = []
    for d in range(len(self.drafts)):
      draft = self.draft(d)
      if select_drafts or not any(g.edits for g in draft.edit_groups):
        refs.append((d, None, None))
      for g, group in enumerate(draft.edit_groups):
        refs.extend((d, g, e) for e in range(len(group.edits)))
    return refs

  def to_record(self) -> dict[str, Any]:
    out: dict[str, Any] = {"id": self.id}
    if self.turn is not None:
      out.update(question_id=self.question_id, turn=self.turn)
    out.update(
      {
        "conversation": self.conversation,
        "mode": self.mode,
        "roles": dict(self.roles),
        "prompt_formats": dict(self.prompt_formats),
        **({"endpoints": dict(self.endpoints)} if self.endpoints is not None else {}),
        "drafts": [None if d is None else d.to_record() for d in self.drafts],
      }
    )
    if self.greedy is not None:
      out["greedy"] = self.greedy.to_record()
    if self.best is not None:
      out.update(
        best=self.best, tokens=self.tokens, token_multiple=self.token_multiple, num_candidates=self.num_candidates
      )
    if self.effective_feedbacks is not None:
      out["effective_feedbacks"] = self.effective_feedbacks
    if self.budget is not None:
      out["budget"] = self.budget
    return out

  @classmethod
  def from_record(cls, r: dict[str, Any]) -> "PromptTree":
    return cls(
      r["id"],
      r["conversation"],
      r["mode"],
      r["roles"],
      r["prompt_formats"],
      [None if d is None else Draft.from_record(d) for d in r["drafts"]],
      None if r.get("greedy") is None else Generated.from_record(r["greedy"]),
      r.get("best"),
      r.get("tokens"),
      r.get("token_multiple"),
      r.get("num_candidates"),
      r.get("effective_feedbacks"),
      r.get("question_id"),
      r.get("turn"),
      r.get("endpoints"),
      r.get("budget"),
    )
