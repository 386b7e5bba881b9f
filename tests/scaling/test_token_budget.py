"""The token budget: which draft is expanded next and why expansion stops, by hand on a small
tree; then on the embedded model, that a budget large enough to expand every draft gives the
unbudgeted tree and that a tight budget or margin expands fewer drafts."""

import pytest

from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.scaling.run import build_search
from helpsteer_jax.scaling.search_settings import SearchSettings
from helpsteer_jax.scaling.token_budget import BUDGET, EVERY_DRAFT, SETTLED, expansion_order, next_expansion
from helpsteer_jax.scaling.tree import Draft, EditGroup, Feedback, Generated, PromptTree
from helpsteer_jax.testing.search_runs import search_config


def _tree(draft_tokens_and_scores, greedy_tokens=10) -> PromptTree:
  drafts = [Draft(Generated(f"d{i}", n, True, score)) for i, (n, score) in enumerate(draft_tokens_and_scores)]
  tree = PromptTree("p", [{"role": "user", "content": "q"}], "feedback_edit", {}, {}, drafts)
  tree.greedy = Generated("g", greedy_tokens, True)
  return tree


def test_drafts_are_expanded_best_first_while_under_the_budget():
  tree = _tree([(10, 0.5), (12, 2.0), (8, 1.0)])  # 30 draft tokens, greedy 10
  assert expansion_order(tree, range(3)) == [1, 2, 0]
  settings = SearchSettings(num_drafts=3, token_budget=4.0)  # 40 counted tokens
  assert next_expansion(tree, [1, 2, 0], [], settings) == (1, "")
  # Draft 1's edit (9 tokens) brings the prompt to 39 < 40: one more; its edit then passes 40.
  tree.draft(1).edit_groups = [EditGroup([0], [Generated("e", 9, True, 2.5)])]
  assert next_expansion(tree, [1, 2, 0], [1], settings) == (2, "")
  tree.draft(2).edit_groups = [EditGroup([0], [Generated("e", 3, True, 0.0)])]
  assert next_expansion(tree, [1, 2, 0], [1, 2], settings) == (None, BUDGET)
  # Feedback is counted only under the generated account.
  tree.draft(1).feedbacks = [Feedback("f", 20, True, 3, 1, True, 0)]
  assert next_expansion(tree, [1, 2, 0], [1, 2], SearchSettings(num_drafts=3, token_budget=5.0)) == (0, "")
  generated = SearchSettings(num_drafts=3, token_budget=5.0, token_account="generated")
  assert next_expansion(tree, [1, 2, 0], [1, 2], generated) == (None, BUDGET)
  assert next_expansion(tree, [1, 2, 0], [1, 2, 0], SearchSettings(num_drafts=3, token_budget=9.0)) == (
    None,
    EVERY_DRAFT,
  )


def test_a_margin_stops_once_the_best_candidate_leads_the_next_draft():
  tree = _tree([(10, 0.5), (12, 2.0), (8, 1.0)])
  settings = SearchSettings(num_drafts=3, settle_margin=1.0)
  assert next_expansion(tree, [1, 2, 0], [], settings) == (1, "")  # the best draft itself: no lead
  tree.draft(1).edit_groups = [EditGroup([0], [Generated("e", 9, True, 2.2)])]
  # The edit (2.2) leads the next draft (1.0) by 1.2: settled at a margin of 1, not of 1.5.
  assert next_expansion(tree, [1, 2, 0], [1], settings) == (None, SETTLED)
  assert next_expansion(tree, [1, 2, 0], [1], SearchSettings(num_drafts=3, settle_margin=1.5)) == (2, "")


def test_settings_refuse_budgets_they_cannot_run():
  with pytest.raises(ValueError, match="token_budget=-1"):
    SearchSettings(token_budget=-1)
  with pytest.raises(ValueError, match="measure_greedy"):
    SearchSettings(token_budget=2.0, measure_greedy=False)
  with pytest.raises(ValueError, match="pipelined"):
    SearchSettings(token_budget=2.0, schedule="staged")
  with pytest.raises(ValueError, match="no expansions"):
    SearchSettings(mode="best_of_n", settle_margin=0.5)


# -- on the embedded model (compiles it and runs searches) ------------------------------------------

PROMPTS = [
  PromptItem(f"q{i}", [{"role": "user", "content": q}])
  for i, q in enumerate(["Name a fruit.", "Why is the sky blue?", "Give me a word that rhymes with cat."])
]


def _search(tmp_path, **search) -> list[dict]:
  config = search_config("", tmp_path / "unused.jsonl", tmp_path / "out", max_new_tokens=8)
  config.search.num_drafts = 3
  for name, value in search.items():
    config.search[name] = value
  return build_search(config, ModelPool()).run(PROMPTS)


def _tree_texts(record) -> list:
  return [
    (d["text"], [f["text"] for f in d["feedbacks"]], [[e["text"] for e in g["edits"]] for g in d["edit_groups"]])
    for d in record["drafts"]
  ]


@pytest.mark.entry
def test_budgets_on_the_embedded_model(tmp_path, embedded_gguf_path):
  fixed = _search(tmp_path)
  # Large enough to expand every draft: the same tree, choice and tokens as the fixed grid.
  ample = _search(tmp_path, token_budget=1000.0)
  for a, b in zip(fixed, ample):
    assert _tree_texts(a) == _tree_texts(b) and a["best"] == b["best"] and a["tokens"] == b["tokens"]
    assert b["budget"]["stopped"] == EVERY_DRAFT and sorted(b["budget"]["expanded"]) == [0, 1, 2]
    scores = [d["score"] for d in b["drafts"]]
    assert b["budget"]["expanded"] == sorted(range(3), key=lambda d: (-scores[d], d))  # best first
  # Under 1x the drafts alone pass the budget: no draft is expanded and a draft is chosen.
  tight = _search(tmp_path, token_budget=0.5)
  for a, b in zip(fixed, tight):
    assert b["budget"] == dict(b["budget"], expanded=[], stopped=BUDGET)
    assert [d["text"] for d in b["drafts"]] == [d["text"] for d in a["drafts"]]
    assert b["best"]["edit"] is None and b["tokens"]["edits"] == 0 and b["token_multiple"] < a["token_multiple"]
  # Any lead settles: only the best draft is expanded (unless drafts tie), its edits as in the grid.
  settled = _search(tmp_path, settle_margin=1e-9)
  for a, b in zip(fixed, settled):
    scores = [d["score"] for d in b["drafts"]]
    order = sorted(range(3), key=lambda d: (-scores[d], d))
    assert _tree_texts(b)[order[0]] == _tree_texts(a)[order[0]]
    if b["best"]["score"] > scores[order[1]]:  # the lead after the first expansion
      assert b["budget"]["expanded"] == order[:1] and b["budget"]["stopped"] == SETTLED
