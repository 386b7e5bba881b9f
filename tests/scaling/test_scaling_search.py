"""The search's tree, modes, filters and selection on a tiny random model."""

import pytest
from flax import nnx

from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.scaling import feedback_filters as ff
from helpsteer_jax.scaling.results import summarize
from helpsteer_jax.scaling.search import (
  FeedbackEditSearch,
  Role,
  SearchSettings,
  StageSampling,
  default_feedback_samples,
)
from helpsteer_jax.scoring.selectors import GenerativeJudgeSelector, RewardModelSelector
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

SHORT = StageSampling(temperature=1.0, top_p=0.95, max_new_tokens=6)


@pytest.fixture(scope="module")
def role():
  return Role("policy", tiny_chat_model(), smollm2_tokenizer())


@pytest.fixture(scope="module")
def items():
  return [
    PromptItem("a", [{"role": "user", "content": "Name a prime number."}]),
    PromptItem(
      "b",
      [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Now say bye in French."},
      ],
    ),
  ]


def _settings(**kw):
  base = dict(
    num_drafts=2,
    num_feedbacks=4,
    num_feedback_samples=4,
    feedback_group_size=3,
    num_edits=2,
    feedback_rule="keep_all",
    draft=SHORT,
    feedback=SHORT,
    edit=SHORT,
    batch_size=8,
    edits_from="every_group",
    token_account="generated",
  )
  base.update(kw)
  return SearchSettings(**base)


class RecordingSelector:
  """Scores by text length and remembers what it was asked."""

  name = "length"
  model_key = "text-length"
  shares_prefill = False

  def __init__(self):
    self.seen = []

  def score(self, items, prefixes=()):
    self.seen.extend(items)
    return [float(len(text)) for _, text in items]

  def prompt_ids(self, conversation, response):
    raise AssertionError("a selector that shares no prefill is never asked for its prompt")

  def use_prefill(self, prefill):
    raise AssertionError("a selector that shares no prefill is never handed one")


def test_feedback_edit_tree_shape_tokens_and_choice(role, items):
  selector = RecordingSelector()
  records = FeedbackEditSearch(_settings(), role, selector=selector).run(items)
  assert [r["id"] for r in records] == ["a", "b"]
  for rec in records:
    assert len(rec["drafts"]) == 2
    for draft in rec["drafts"]:
      assert len(draft["feedbacks"]) == 4
      kept = [i for i, f in enumerate(draft["feedbacks"]) if f["kept"]]
      groups = draft["edit_groups"]
      assert [g["feedback"] for g in groups] == [kept[:3], kept[3:]][: len(groups)]
      assert all(len(g["edits"]) == 2 for g in groups)
    # Every candidate was scored and the best is the highest score.
    cands = [d for d in rec["drafts"]] + [e for d in rec["drafts"] for g in d["edit_groups"] for e in g["edits"]]
    assert all("score" in c for c in cands)
    assert rec["best"]["score"] == max(c["score"] for c in cands)
    assert rec["num_candidates"] == len(cands)
    t = rec["tokens"]
    assert t["total"] == t["drafts"] + t["feedback"] + t["edits"] > 0
    assert rec["token_multiple"] == pytest.approx(t["total"] / rec["greedy"]["num_tokens"])
    per_draft = [sum(f["kept"] for f in d["feedbacks"]) for d in rec["drafts"]]
    assert rec["effective_feedbacks"] == {
      "per_draft": per_draft,
      "total": sum(per_draft),
      "sampled_per_draft": 4,
      "sampled": [4] * len(rec["drafts"]),
      "stopped_early": 0,
    }
  assert len(selector.seen) == sum(r["num_candidates"] for r in records)


def test_effective_feedbacks_sample_twice_as_many_by_default(role, items):
  assert [default_feedback_samples(m) for m in (1, 2, 16, 32, 40, 64, 80)] == [2, 4, 32, 64, 64, 64, 80]
  settings = _settings(num_drafts=1, num_feedbacks=2, num_feedback_samples=0, num_edits=1)
  assert settings.feedback_samples == 4
  records = FeedbackEditSearch(settings, role, selector=RecordingSelector()).run(items[:1])
  draft = records[0]["drafts"][0]
  # 4 sampled, at most M = 2 kept (the rule drops empty text, which a random model can write).
  assert len(draft["feedbacks"]) == 4
  assert draft["num_effective_feedbacks"] == sum(f["kept"] for f in draft["feedbacks"]) <= 2
  with pytest.raises(ValueError, match="cannot keep more effective feedbacks than are sampled"):
    _settings(num_feedbacks=4, num_feedback_samples=3)


def test_summary_token_multiple_is_a_ratio_of_sums():
  def record(total, greedy, kept):
    return {
      "tokens": {"drafts": total, "feedback": 0, "edits": 0, "total": total, "greedy": greedy},
      "token_multiple": total / greedy,
      "best": {"score": 1.0, "edit": None},
      "drafts": [],
      "num_candidates": 1,
      "effective_feedbacks": {"per_draft": kept, "total": sum(kept)},
    }

  # One 6-token greedy answer: the mean of ratios is (252/6 + 300/300) / 2 = 21.5, the ratio of
  # sums (252 + 300) / (6 + 300) = 1.80.
  summary = summarize([record(252, 6, [2, 1]), record(300, 300, [2, 2])])
  assert summary["token_multiple"] == pytest.approx(552 / 306)
  assert summary["mean_token_multiple_per_prompt"] == pytest.approx(21.5)
  assert summary["tokens"] == {"drafts": 552, "feedback": 0, "edits": 0, "total": 552, "greedy": 306}
  assert summary["mean_effective_feedbacks_per_draft"] == pytest.approx(7 / 4)
  assert summary["mean_effective_feedbacks_per_prompt"] == pytest.approx(3.5)


def test_baselines_from_the_same_code_path(role, items):
  greedy = FeedbackEditSearch(_settings(mode="greedy"), role).run(items)
  assert all(len(r["drafts"]) == 1 and r["token_multiple"] == 1.0 for r in greedy)
  bon = FeedbackEditSearch(_settings(mode="best_of_n", num_drafts=3), role, selector=RecordingSelector()).run(items)
  assert all(len(r["drafts"]) == 3 and not r["drafts"][0]["feedbacks"] for r in bon)
  assert all(r["best"]["edit"] is None for r in bon)
  revise = FeedbackEditSearch(_settings(mode="edit_without_feedback"), role, selector=RecordingSelector()).run(items)
  for r in revise:
    assert all(d["edit_groups"][0]["feedback"] == [] and len(d["edit_groups"][0]["edits"]) == 2 for d in r["drafts"])
    assert r["tokens"]["feedback"] == 0
  with pytest.raises(ValueError, match="needs a selector"):
    FeedbackEditSearch(_settings(mode="best_of_n"), role)


def test_separate_roles_are_used(role, items):
  other = Role("editor", tiny_chat_model(seed=3), role.tokenizer)
  records = FeedbackEditSearch(
    _settings(num_drafts=1, num_feedbacks=2), role, selector=RecordingSelector(), edit=other
  ).run(items[:1])
  assert records[0]["roles"]["edit"] == "editor" and records[0]["roles"]["feedback"] == "policy"


def test_selectors_score_with_models(role, items):
  conv = items[0].conversation
  judge = GenerativeJudgeSelector(role.model, role.tokenizer)
  scores = judge.score([(conv, "2"), (conv, "Seven is a prime number.")])
  assert len(scores) == 2 and all(0.0 <= s <= 4.0 for s in scores) and scores[0] != scores[1]
  # Through a search's engine: the judge shares its chunked prefill (the judge prompt begins as
  # the Feedback request about the same draft does) and scores as the batched forward does.
  search = FeedbackEditSearch(_settings(num_drafts=1), role, selector=judge)
  engine = search.engine(role)
  assert judge.prefill is engine.prefill
  assert judge.score([(conv, "2"), (conv, "Seven is a prime number.")]) == pytest.approx(scores, abs=1e-5)
  assert engine.stats()["prefill_chunks"]["computed_chunks"] > 0
  # A judge over another model shares no role's engine.
  other = GenerativeJudgeSelector(tiny_chat_model(seed=3), role.tokenizer)
  assert FeedbackEditSearch(_settings(num_drafts=1), role, selector=other).judge_key is None
  rm = RewardModel(role.model.config, rngs=nnx.Rngs(1))
  rm_scores = RewardModelSelector(rm, role.tokenizer).score([(conv, "2"), (conv, "Seven."), (conv, "2")])
  assert rm_scores[0] == pytest.approx(rm_scores[2], abs=1e-5) and rm_scores[0] != rm_scores[1]


def test_feedback_parsing_and_rules():
  good = (
    "The response is partially helpful. It should mention that 2 is the only even prime. "
    "The explanation is missing a proof. Otherwise fine."
  )
  perfect = "The response is perfectly helpful. Nothing to change."
  vague = "Nice answer."
  assert ff.parse_helpfulness(good) == 2 and ff.parse_helpfulness(perfect) == 4
  assert ff.parse_helpfulness(vague) is None
  assert ff.count_change_requests(good) == 2 and ff.count_change_requests(perfect) == 0
  assert ff.constructive([perfect, vague, good, ""], cap=3) == [2, 1]
  assert ff.constructive([perfect, vague, good], cap=1) == [2]
  assert ff.constructive_strict([perfect, vague, good], cap=3) == [2]
  assert ff.keep_all([perfect, "", good], cap=5) == [0, 2]
  with pytest.raises(ValueError, match="unknown feedback rule"):
    SearchSettings(feedback_rule="vibes")


def test_stage_progress_counts_every_stage_as_samples_complete(role, items):
  from helpsteer_jax.scaling.progress import StageProgress, stage_log_lines

  lines = []
  progress = StageProgress(on_change=lambda p: lines.append(p.line()), min_interval_s=0.0)
  search = FeedbackEditSearch(
    _settings(num_drafts=2, num_edits=1), role, selector=RecordingSelector(), progress=progress
  )
  records = search.run(items)
  drafts = sum(len(r["drafts"]) for r in records)
  feedbacks = sum(len(d["feedbacks"]) for r in records for d in r["drafts"])
  edits = sum(len(g["edits"]) for r in records for d in r["drafts"] for g in d["edit_groups"])
  assert progress.stages["draft"].samples == drafts == 4
  assert progress.stages["feedback"].samples == feedbacks == 16
  assert progress.stages["edit"].samples == edits and progress.stages["greedy"].samples == 2
  assert progress.stages["draft"].tokens == sum(r["tokens"]["drafts"] for r in records)
  assert progress.scored == sum(r["num_candidates"] for r in records)
  assert len(lines) > drafts and lines[-1].startswith("draft 4 (") and "select" in lines[-1]
  stats = search.stats()
  log = stage_log_lines(stats["engines"], stats["select_seconds"], progress.scored)
  assert any(l.startswith("stage feedback (policy): 16 samples") and "tokens/s" in l for l in log)
  assert log[-1].startswith(f"stage select: {progress.scored} candidates scored")


def test_tree_readings_are_parts_of_the_whole_tree(items):
  """Each reading of the paper's tree samples a part of the tree with feedback on every draft and
  an edit per group: the same samples where they overlap (keys name the draft and group), so the
  readings differ in what they spend, never in what a shared sample says."""
  shape = dict(num_drafts=3, num_feedbacks=4, num_feedback_samples=4, num_edits=1, feedback_group_size=2)
  role = Role("policy", tiny_chat_model(tie_word_embeddings=False), smollm2_tokenizer())  # writes words
  whole = FeedbackEditSearch(_settings(**shape), role, selector=RecordingSelector()).run(items)
  top_group = FeedbackEditSearch(_settings(**shape, edits_from="top_group"), role, selector=RecordingSelector()).run(
    items
  )
  best_draft = FeedbackEditSearch(
    _settings(**shape, feedback_drafts=1, edits_from="top_group", token_account="responses"),
    role,
    selector=RecordingSelector(),
  ).run(items)
  for w, t, b in zip(whole, top_group, best_draft):
    assert any(len(d["edit_groups"]) == 2 for d in w["drafts"])  # up to 4 kept, in groups of 2
    for wd, td in zip(w["drafts"], t["drafts"]):
      assert td["feedbacks"] == wd["feedbacks"] and td["edit_groups"] == wd["edit_groups"][:1]
    # Feedback on the longest draft only (the selector scores by length), the same as in the whole.
    scores = [d["score"] for d in w["drafts"]]
    best = scores.index(max(scores))
    for d, (wd, bd) in enumerate(zip(w["drafts"], b["drafts"])):
      assert bd["text"] == wd["text"] and bd["score"] == wd["score"]
      if d == best:
        assert bd["feedbacks"] == wd["feedbacks"] and bd["edit_groups"] == wd["edit_groups"][:1]
      else:
        assert bd["feedbacks"] == [] and bd["edit_groups"] == [] and "num_effective_feedbacks" not in bd
    assert b["num_candidates"] == 3 + 1
    # The token accounts: every generated token, or the drafts' and edits' only.
    tw, tb = w["tokens"], b["tokens"]
    assert w["token_multiple"] == pytest.approx(tw["total"] / tw["greedy"])
    assert b["token_multiple"] == pytest.approx((tb["drafts"] + tb["edits"]) / tb["greedy"])
  summary = summarize(best_draft, "responses")
  assert summary["token_account"] == "responses"
  greedy = sum(r["tokens"]["greedy"] for r in best_draft)
  assert summary["token_multiples"] == pytest.approx(
    {
      "responses": sum(r["tokens"]["drafts"] + r["tokens"]["edits"] for r in best_draft) / greedy,
      "generated": sum(r["tokens"]["total"] for r in best_draft) / greedy,
    }
  )
  assert summary["token_multiple"] == summary["token_multiples"]["responses"]


def test_responses_per_prompt_is_the_equal_token_best_of_n():
  # The paper's point under the default reading: 8 drafts and one edit each, Best-of-16.
  paper = SearchSettings(num_drafts=8, num_feedbacks=16)
  assert paper.edits_from == "top_group" and paper.token_account == "responses"
  assert paper.responses_per_prompt == 16
  assert SearchSettings(num_drafts=8, num_feedbacks=16, edits_from="every_group").responses_per_prompt == 8 + 8 * 6
  assert SearchSettings(num_drafts=8, num_feedbacks=16, feedback_drafts=2).responses_per_prompt == 10
  assert SearchSettings(mode="best_of_n", num_drafts=16).responses_per_prompt == 16
  for bad, match in (
    (dict(edits_from="all"), "edits_from"),
    (dict(token_account="all"), "token_account"),
    (dict(feedback_drafts=-1), "feedback_drafts"),
  ):
    with pytest.raises(ValueError, match=match):
      SearchSettings(**bad)
