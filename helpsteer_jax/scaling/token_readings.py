"""The readings of the paper's tree and token account, and what each costs.

The paper gives its best system as "8 drafts x 16 effective feedbacks" at "about 16x the tokens of
one greedy answer (equivalent to Best-of-16)", without the formula. Its public text allows several
readings, each a config choice of the search (search_settings.py; docs/reproducing.md):
    feedback_drafts  0: feedback on every draft | k: only on the best k drafts by the selector
    edits_from       every_group: one Edit request per group of kept feedback | top_group: one per
                     draft, from its best group
    token_account    generated: every generated token counts | responses: the drafts' and edits'
`expected_multiple` gives a reading's token multiple from mean stage lengths; `record_tokens` reads
what a reading would have generated out of a record sampled under the widest one (feedback on
every draft, an edit per group): the readings sample parts of that tree with the same keys, so
the part is exactly what a run under the reading writes (tests/scaling/test_scaling_search.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from helpsteer_jax.scaling.search_settings import EDITS_FROM, TOKEN_ACCOUNTS, SearchSettings


@dataclasses.dataclass(frozen=True)
class StageLengths:
  """Mean generated tokens of one answer of each stage."""

  draft: float
  feedback: float
  edit: float
  greedy: float


@dataclasses.dataclass(frozen=True)
class Reading:
  feedback_drafts: int  # 0 = every draft
  edits_from: str
  token_account: str

  @property
  def name(self) -> str:
    drafts = "every draft" if not self.feedback_drafts else f"best {self.feedback_drafts} draft(s)"
    return f"feedback on {drafts}, {self.edits_from}, {self.token_account}"

  def apply(self, settings: SearchSettings) -> SearchSettings:
    return dataclasses.replace(
      settings, feedback_drafts=self.feedback_drafts, edits_from=self.edits_from, token_account=self.token_account
    )


READINGS = tuple(Reading(d, e, t) for d in (0, 1) for e in EDITS_FROM for t in TOKEN_ACCOUNTS)


def expected_multiple(settings: SearchSettings, lengths: StageLengths) -> float:
  """The token multiple of a feedback_edit search whose drafts each keep M effective feedbacks,
  from mean stage lengths."""
  edited = settings.feedback_drafts if settings.feedback_on_top_drafts else settings.num_drafts
  edits = settings.responses_per_prompt - settings.num_drafts
  tokens = settings.num_drafts * lengths.draft + edits * lengths.edit
  if settings.token_account == "generated":
    tokens += edited * settings.feedback_samples * lengths.feedback
  return tokens / lengths.greedy


def record_tokens(record: Mapping[str, Any], reading: Reading) -> dict[str, int]:
  """{drafts, feedback, edits, greedy} tokens the search would have generated for `record`'s
  prompt under `reading`, from a record with feedback on every draft and an edit per group."""
  drafts = record["drafts"]
  chosen: Sequence[int] = range(len(drafts))
  if reading.feedback_drafts and reading.feedback_drafts < len(drafts):
    scores = [d.get("score") for d in drafts]
    if any(s is None for s in scores):
      raise ValueError(f"record {record['id']}: the drafts are not scored, so the best cannot be read")
    chosen = sorted(range(len(drafts)), key=lambda d: -scores[d])[: reading.feedback_drafts]

  def groups(d):
    g = drafts[d]["edit_groups"]
    return g[:1] if reading.edits_from == "top_group" else g

  return {
    "drafts": sum(d["num_tokens"] for d in drafts),
    "feedback": sum(f["num_tokens"] for d in chosen for f in drafts[d]["feedbacks"]),
    "edits": sum(e["num_tokens"] for d in chosen for g in groups(d) for e in g["edits"]),
    "greedy": record["tokens"]["greedy"],
  }


def measured_multiple(records: Sequence[Mapping[str, Any]], reading: Reading) -> float:
  """The ratio of sums (results.summarize) of `records` read under `reading`."""
  counted = greedy = 0
  for r in records:
    t = record_tokens(r, reading)
    counted += t["drafts"] + t["edits"] + (t["feedback"] if reading.token_account == "generated" else 0)
    greedy += t["greedy"]
  return counted / greedy
