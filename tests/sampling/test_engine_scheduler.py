"""The engine's scheduler on a mock device engine (no model): tokens worked out by hand, slot order
and priorities, the tail's smaller program, growth, callbacks and the counts in `stats()`."""

import numpy as np
import pytest

from helpsteer_jax.sampling.engine import EarlyStop, Engine, EngineSettings, Request
from helpsteer_jax.sampling.mock_engine import MockEngine, expected_tokens
from helpsteer_jax.sampling.settings import SamplingSettings

KEY = np.zeros(2, np.uint32)


def _engine(**settings) -> tuple[Engine, MockEngine]:
  settings = EngineSettings(**settings)
  mock = MockEngine(settings)
  return Engine(mock, settings), mock


def _inserts(mock: MockEngine) -> list[tuple[int, int, int]]:
  return [details for what, details in mock.log if what == "insert"]


def test_every_sample_gets_the_hand_computed_tokens_through_refills():
  engine, mock = _engine(num_slots=2, steps_per_call=3, stop_token_ids=(7,))
  prompts = [[1, 2], [3], [1, 1, 1, 1], [5]]
  requests = [Request(p, SamplingSettings(max_new_tokens=2 + 3 * i), KEY, n=2) for i, p in enumerate(prompts)]
  for r in requests:
    engine.submit(r)
  engine.run()
  for i, (prompt, request) in enumerate(zip(prompts, requests)):
    assert request.results == [expected_tokens(prompt, s, 2 + 3 * i, (7,)) for s in range(2)]
  # Prompt [5]'s first sample starts at token 5 and stops before 7 (the stop token).
  assert requests[3].results[0] == [5, 6]
  assert not engine.busy and engine.free_slots == 2


def test_higher_priority_takes_free_slots_first_and_equal_ones_keep_submission_order():
  engine, mock = _engine(num_slots=1, tail_slots=0)
  settings = SamplingSettings(max_new_tokens=1)
  for prompt, priority in (([1], 0), ([2], 0), ([3], 5), ([4], 5), ([5], 1)):
    engine.submit(Request(prompt, settings, KEY, priority=priority))
  engine.run()
  assert [prompt_sum for _, prompt_sum, _ in _inserts(mock)] == [3, 4, 5, 1, 2]


def test_sample_indices_choose_the_samples_of_a_resumed_request():
  engine, _ = _engine(num_slots=4)
  request = Request([2], SamplingSettings(max_new_tokens=3), KEY, n=2, sample_indices=(3, 1))
  engine.submit(request)
  engine.run()
  assert request.results == [[32, 33, 34], [12, 13, 14]]


def test_the_tail_moves_to_a_smaller_program_and_back_when_a_callback_submits():
  engine, mock = _engine(num_slots=4, tail_slots=2, steps_per_call=1)
  short, long = SamplingSettings(max_new_tokens=2), SamplingSettings(max_new_tokens=6)
  follow_up = Request([9], short, KEY, tag="follow")
  first = [
    Request([1], short, KEY),
    Request([2], short, KEY),
    Request([3], long, KEY),
    Request([4], long, KEY, on_done=lambda request, samples: engine.submit(follow_up)),
  ]
  for r in first:
    engine.submit(r)
  engine.run()
  decodes = [details for what, details in mock.log if what == "decode"]
  # Four live slots decode in the full program; once two are left, in the tail's; the follow-up
  # (queued from request 4's callback, once the tail had finished) brings the full program back.
  assert decodes[0] == 4 and 2 in decodes
  assert [what for what, _ in mock.log if what == "take"] == ["take", "take", "take"]
  assert follow_up.results == [expected_tokens([9], 0, 2)]
  assert [r.results[0] for r in first] == [expected_tokens([p], 0, m) for p, m in ((1, 2), (2, 2), (3, 6), (4, 6))]
  stats = engine.stats()
  assert stats["resizes"] == 3 and stats["tail_steps"] > 0


def test_a_longer_request_grows_the_state():
  engine, mock = _engine(num_slots=2, attention_block=8, cache_length=16)
  engine.submit(Request([1] * 4, SamplingSettings(max_new_tokens=4), KEY))
  engine.run()
  engine.submit(Request([1] * 20, SamplingSettings(max_new_tokens=40), KEY))
  engine.run()
  grows = [details for what, details in mock.log if what == "grow"]
  assert len(grows) == 1 and grows[0][0] >= 60 and grows[0][1] >= 40


def test_stats_count_tokens_per_tag_and_slot_use_by_hand():
  engine, _ = _engine(num_slots=2, tail_slots=0, steps_per_call=100)
  engine.submit(Request([1], SamplingSettings(max_new_tokens=5), KEY, n=2, tag="a"))
  engine.submit(Request([2, 3], SamplingSettings(max_new_tokens=3), KEY, tag="b"))
  seen = []
  engine.submit(
    Request(
      [4],
      SamplingSettings(max_new_tokens=1),
      KEY,
      tag="b",
      on_sample=lambda request, j, tokens: seen.append((j, tokens)),
    )
  )
  engine.run()
  stats = engine.stats()
  assert stats["stages"]["a"]["tokens"] == 10 and stats["stages"]["a"]["samples"] == 2
  assert stats["stages"]["b"]["tokens"] == 4 and stats["stages"]["b"]["requests"] == 2
  assert stats["stages"]["b"]["prefill_tokens"] == 3
  # The first token of each sample comes from its insert; decode steps made the other 10.
  assert stats["decode_tokens"] == 4 + 4 + 2
  # Two slots x 4 steps for "a" (8 tokens), then "b"'s 3-token sample alone for 2 steps.
  assert stats["decode_steps"] == 6 and stats["slot_use"] == pytest.approx(10 / 12)
  assert seen == [(0, expected_tokens([4], 0, 1))]


def test_bad_requests_are_refused_at_submit():
  engine, _ = _engine(num_slots=2)
  settings = SamplingSettings(max_new_tokens=4)
  with pytest.raises(ValueError, match="empty"):
    engine.submit(Request([], settings, KEY))
  with pytest.raises(ValueError, match="n=0"):
    engine.submit(Request([1], settings, KEY, n=0))
  with pytest.raises(ValueError, match="sample_indices"):
    engine.submit(Request([1], settings, KEY, n=2, sample_indices=(1,)))
  with pytest.raises(ValueError, match="prefill_breaks"):
    engine.submit(Request([1, 2], settings, KEY, prefill_breaks=(2,)))
  with pytest.raises(ValueError, match="context of 4096"):
    engine.submit(Request([1] * 4094, settings, KEY))
  assert not engine.busy


def test_an_early_stop_ends_the_samples_it_rejects_and_frees_their_slots():
  # Sample s of prompt [2] gives 2 + 10 s, 3 + 10 s, ...: samples whose first token is a multiple
  # of 4 stop once they have 2 tokens (checked after each decode call of 1 step).
  engine, mock = _engine(num_slots=2, steps_per_call=1, tail_slots=0)
  early = EarlyStop(after_tokens=2, stop=lambda tokens: tokens[0] % 4 == 0)
  request = Request([2], SamplingSettings(max_new_tokens=6), KEY, n=4, tag="feedback", early_stop=early)
  plain = Request([2], SamplingSettings(max_new_tokens=6), KEY, n=4, tag="plain")
  engine.submit(request)
  engine.submit(plain)
  engine.run()
  full = [expected_tokens([2], s, 6) for s in range(4)]
  assert plain.results == full
  assert request.stopped_early == {1, 3}  # first tokens 12 and 32
  assert request.results == [full[0], full[1][:2], full[2], full[3][:2]]
  stats = engine.stats()["stages"]
  assert stats["feedback"]["stopped_early"] == 2 and stats["plain"]["stopped_early"] == 0
  assert stats["feedback"]["tokens"] == 6 + 2 + 6 + 2
