"""Feedback in waves and early exit, on the embedded model, for what each must not change: waves
draw a prefix of the samples `all` draws and keep the same feedback when the rule keeps the first
M; early exit keeps the same feedback, edits and choice for fewer tokens; a prefix table keeps
every text."""

import pytest

from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.scaling import feedback_filters
from helpsteer_jax.scaling.run import build_search
from helpsteer_jax.testing.search_runs import search_config

pytestmark = pytest.mark.entry  # compiles the embedded model and runs searches

PROMPTS = [
  PromptItem(f"q{i}", [{"role": "user", "content": q}]) for i, q in enumerate(["Name a fruit.", "Why is the sky blue?"])
]


def build_search_for(tmp_path, pool, **search):
  config = search_config("", tmp_path / "unused.jsonl", tmp_path / "out", max_new_tokens=8)
  config.search.num_feedback_samples = 4
  for name, value in search.items():
    config.search[name] = value
  return build_search(config, pool)


def run(tmp_path, pool, **search) -> list[dict]:
  return build_search_for(tmp_path, pool, **search).run(PROMPTS)


def kept(record) -> list[list[str]]:
  return [[f["text"] for f in d["feedbacks"] if f["kept"]] for d in record["drafts"]]


def edits(record) -> list:
  return [[e["text"] for g in d["edit_groups"] for e in g["edits"]] for d in record["drafts"]]


@pytest.fixture(scope="module")
def pool(embedded_gguf_path):
  return ModelPool()


def test_waves_draw_a_prefix_of_the_same_samples(tmp_path, pool):
  every = run(tmp_path, pool, feedback_rule="keep_all")
  waves = run(tmp_path, pool, feedback_rule="keep_all", feedback_sampling="waves")
  saved = 0
  for a, w in zip(every, waves):
    for da, dw in zip(a["drafts"], w["drafts"]):
      texts = [f["text"] for f in dw["feedbacks"]]
      assert texts == [f["text"] for f in da["feedbacks"]][: len(texts)]
      saved += sum(f["num_tokens"] for f in da["feedbacks"]) - sum(f["num_tokens"] for f in dw["feedbacks"])
    # keep_all keeps the first M non-empty feedbacks: the first wave's, when none is empty.
    assert kept(a) == kept(w) and edits(a) == edits(w) and a["best"] == w["best"]
    assert w["effective_feedbacks"]["sampled"] == [2, 2] and a["effective_feedbacks"]["sampled"] == [4, 4]
  assert saved > 0


def test_early_exit_keeps_the_same_feedback_for_fewer_tokens(tmp_path, pool, monkeypatch):
  # A rule that drops feedback opening with "T" (as `constructive` drops "The response is
  # perfectly helpful"), decided by its first two tokens.
  opens_with_t = lambda text: text.lstrip()[:1] == "T"
  rule = lambda texts, cap: [i for i, t in enumerate(texts) if t.strip() and not opens_with_t(t)][:cap]
  monkeypatch.setitem(feedback_filters.RULES, "not_t", rule)
  monkeypatch.setitem(feedback_filters.EARLY_REJECTS, "not_t", opens_with_t)
  plain = run(tmp_path, pool, feedback_rule="not_t")
  early = run(tmp_path, pool, feedback_rule="not_t", feedback_early_exit=True, early_exit_tokens=2)
  stopped = sum(r["effective_feedbacks"]["stopped_early"] for r in early)
  assert stopped > 0 and sum(r["effective_feedbacks"]["stopped_early"] for r in plain) == 0
  for p, e in zip(plain, early):
    assert kept(p) == kept(e) and edits(p) == edits(e) and p["best"] == e["best"]
  assert sum(r["tokens"]["feedback"] for r in early) < sum(r["tokens"]["feedback"] for r in plain)


def test_a_prefix_table_keeps_the_records(tmp_path, pool):
  # A question long enough that the conversation and draft fill whole attention blocks: the
  # feedback and edit prompts on a draft then read them from the table.
  question = "Explain, step by step, " + " and ".join(f"why fact {i} holds" for i in range(40)) + "."
  long_prompts = [PromptItem("long", [{"role": "user", "content": question}])]
  plain = build_search_for(tmp_path, pool).run(long_prompts)
  search = build_search_for(tmp_path, pool, prefix_entries=4)
  shared = search.run(long_prompts)
  assert [texts(r) for r in shared] == [texts(r) for r in plain]
  table = next(iter(search.stats()["engines"].values()))["prefix_table"]
  assert table["written"] > 0 and table["reused"] > 0, table


def texts(record) -> tuple:
  feedback = [[f["text"] for f in d["feedbacks"]] for d in record["drafts"]]
  return [d["text"] for d in record["drafts"]], feedback, edits(record), record["best"]
