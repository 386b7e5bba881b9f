"""The decode engine with a prefix table: the same tokens as with every prompt in its own row."""

import pytest

from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.sampler import SamplingSettings

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _search_like_requests():
  """The search's shapes in small: a conversation, drafts on it (break after the conversation),
  then per draft a feedback request of n samples (break after the draft) and one longer edit prompt
  on the same draft. Prompts span several blocks of 4, with shared parts that do and do not end on
  a block boundary."""
  conversation = list(range(3, 14))  # 11 tokens: 2 whole blocks shared
  drafts = [[20 + i] * (5 + 3 * i) for i in range(3)]
  out = []
  for i, draft in enumerate(drafts):
    prompt = conversation + draft
    out.append(Request(conversation + [1], SamplingSettings(max_new_tokens=5, temperature=0.8), sample_key(1, i)))
    out.append(
      Request(
        prompt + [2, 2],
        SamplingSettings(max_new_tokens=7, temperature=0.9),
        sample_key(2, i),
        n=4,
        prefill_breaks=(len(conversation), len(prompt)),
      )
    )
    out.append(
      Request(
        prompt + [3] * 6,
        SamplingSettings(max_new_tokens=6),
        sample_key(3, i),
        prefill_breaks=(len(conversation), len(prompt)),
      )
    )
  return out


def _run(model, **settings):
  batch = _search_like_requests()
  engine = Engine(model, EngineSettings(attention_block=4, prefill_chunk=4, **settings))
  for r in batch:
    engine.submit(r)
  engine.run()
  return [r.results for r in batch], engine


def test_a_prefix_table_keeps_the_tokens(model):
  plain, _ = _run(model, num_slots=6)
  # 8 entries: every shared prefix gets one. 2 entries: prompts find the table full and are held
  # whole in their rows. With tail slots, slots move while they read the table.
  for entries, tail in ((8, 0), (2, 0), (8, 3)):
    shared, engine = _run(model, num_slots=6, prefix_entries=entries, tail_slots=tail)
    assert shared == plain, (entries, tail)
    table = engine.device.entries
    assert table.written > 0 and table.reused > 0, (entries, table.written, table.reused)
    if entries == 2:
      assert table.written > entries  # entries no slot reads any more were written again


def test_a_prefix_table_refuses_bad_settings():
  with pytest.raises(ValueError, match="prefix_entries=-1"):
    EngineSettings(prefix_entries=-1)
