"""A prompt's token budget: which draft to expand next, and when to stop spending.

The paper's grid expands every draft: each gets its feedback and edits whatever its score, and
most of that spend changes nothing when a draft stays the best answer. Under a budget
(`search.token_budget=X`, a multiple of the prompt's greedy answer counted by
`search.token_account`) or a settling margin (`search.settle_margin`), every draft is still
written and scored, and then the drafts are expanded one at a time, best first by the selector
(the drafts `feedback_drafts` names, when it names some), each after the one before has its edits
scored. Before each expansion:
- budget: it starts only while the prompt's counted tokens are under X times its greedy answer's.
  An expansion's cost is not known before it runs, so the last one may end over the budget; the
  record's token multiple is what was spent.
- settled: it starts only while the next draft's score is within the margin of the best candidate
  so far; its edits would have to gain at least the margin over their own draft to win.
Samples keep their keys (seed, prompt, stage, indices), so an expanded draft's feedback and edits
are those of the unbudgeted search, and a budget large enough to expand every draft gives its tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from helpsteer_jax.scaling.search_settings import SearchSettings
from helpsteer_jax.scaling.tree import PromptTree, counted_tokens

BUDGET, SETTLED, EVERY_DRAFT = "budget", "settled", "every draft"


def expansion_order(tree: PromptTree, drafts: Sequence[int]) -> list[int]:
  """`drafts` best first by their scores (ties to the earlier draft)."""

  def rank(d: int) -> tuple[float, int]:
    score = tree.draft(d).answer.score
    return (-score if score is not None else float("inf"), d)

  return sorted(drafts, key=rank)


def budget_limit(tree: PromptTree, settings: SearchSettings) -> Optional[float]:
  """Counted tokens the prompt may spend before an expansion starts (None: no budget)."""
  if not settings.token_budget:
    return None
  if tree.greedy is None:
    raise RuntimeError(f"prompt {tree.id}: the token budget needs the greedy answer first")
  return settings.token_budget * tree.greedy.num_tokens


def next_expansion(
  tree: PromptTree, order: Sequence[int], expanded: Sequence[int], settings: SearchSettings
) -> tuple[Optional[int], str]:
  """The next draft of `order` to expand, or None and why none is: BUDGET, SETTLED or
  EVERY_DRAFT."""
  remaining = [d for d in order if d not in expanded]
  if not remaining:
    return None, EVERY_DRAFT
  limit = budget_limit(tree, settings)
  if limit is not None and counted_tokens(tree.generated_tokens(), settings.token_account) >= limit:
    return None, BUDGET
  d = remaining[0]
  if settings.settle_margin:
    scores = [tree.node(ref).score for ref in tree.candidates(settings.select_drafts)]
    best = max((s for s in scores if s is not None), default=None)
    own = tree.draft(d).answer.score
    if best is not None and own is not None and best - own >= settings.settle_margin:
      return None, SETTLED
  return d, ""
