"""Chunked prefill on a tiny random model: against the full forward (also with chunks broken at
positions inside a block), reuse by prefix bit for bit, writes confined to the slot filled, the
kept chunks' byte bound, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.sampling.chunked_prefill import Chunk, ChunkedPrefill, PrefixChunks
from helpsteer_jax.testing.decode_reference import full_forward_keys_values

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

CHUNK = 4


def _prompt(length, offset=0):
  return [(7 * i + 3 + offset) % 250 + 1 for i in range(length)]


@pytest.mark.parametrize("length", [1, 4, 5, 13])
def test_chunks_give_the_full_forward_logits_and_cache(model, length):
  prompt = _prompt(length)
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  cache, hidden, computed = prefill.fill(SlotCache.init(model.config, 2, 32), 1, prompt)
  assert computed == length and int(cache.lengths[1]) == length and int(cache.lengths[0]) == 0
  ids = jnp.asarray([prompt])
  full = model(ids)[0, -1]
  np.testing.assert_allclose(np.asarray(prefill.logits(hidden))[0], np.asarray(full), atol=2e-5)
  np.testing.assert_allclose(prefill.next_token_logits(prompt), np.asarray(full), atol=2e-5)
  reference = full_forward_keys_values(model, ids)
  for got, want in zip((cache.k, cache.v), reference):
    np.testing.assert_allclose(np.asarray(got[:, 1, :, :length]), np.asarray(want[:, 0]), atol=2e-5)


def test_a_kept_chunk_is_what_recomputing_it_gives_bit_for_bit(model):
  first = _prompt(11)
  second = first[:8] + _prompt(6, offset=40)  # shares two whole chunks, then differs
  shared = ChunkedPrefill(model, chunk=CHUNK)
  cache = SlotCache.init(model.config, 3, 32)
  cache, _, _ = shared.fill(cache, 0, first)
  cache, hidden, computed = shared.fill(cache, 2, second)
  assert computed == len(second) - 8 and shared.counts.reused_tokens == 8
  fresh = ChunkedPrefill(model, chunk=CHUNK)
  alone, alone_hidden, _ = fresh.fill(SlotCache.init(model.config, 3, 32), 2, second)
  assert np.array_equal(np.asarray(hidden), np.asarray(alone_hidden))
  padded = fresh.padded_length(len(second))
  for got, want in ((cache.k, alone.k), (cache.v, alone.v)):
    assert np.array_equal(np.asarray(got[:, 2, :, :padded]), np.asarray(want[:, 2, :, :padded]))
  # The whole prompt again: every chunk is copied, none computed.
  _, again, computed = shared.fill(cache, 1, second)
  assert computed == 0 and np.array_equal(np.asarray(again), np.asarray(hidden))


def test_segments_break_chunks_and_restart_them_after_each_break(model):
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  assert prefill.segments(9) == [(0, 4), (4, 8), (8, 9)]
  assert prefill.segments(13, breaks=(6, 0, 13, 20, 6)) == [(0, 4), (4, 6), (6, 10), (10, 13)]
  assert prefill.segments(9, breaks=(2, 3)) == [(0, 2), (2, 3), (3, 7), (7, 9)]
  assert prefill.padded_length(13, breaks=(6,)) == 14  # the last chunk's program holds 4 positions


def test_a_short_piece_runs_in_the_next_quarter_chunk_program(model):
  prefill = ChunkedPrefill(model, chunk=128)
  assert [prefill.width(t) for t in (1, 32, 33, 66, 96, 97, 128)] == [32, 32, 64, 96, 96, 128, 128]
  assert prefill.padded_length(300, breaks=(100,)) == 228 + 96  # pieces 0-100, 100-228, 228-300
  assert ChunkedPrefill(model, chunk=32).width(5) == 16  # never narrower than 16


@pytest.mark.parametrize("breaks", [(6,), (3, 9), (1, 2, 11)])
def test_chunks_broken_anywhere_give_the_full_forward(model, breaks):
  prompt = _prompt(13)
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  cache, hidden, computed = prefill.fill(SlotCache.init(model.config, 1, 32), 0, prompt, breaks)
  assert computed == 13
  ids = jnp.asarray([prompt])
  full = model(ids)[0, -1]
  np.testing.assert_allclose(np.asarray(prefill.logits(hidden))[0], np.asarray(full), atol=2e-5)
  reference = full_forward_keys_values(model, ids)
  for got, want in zip((cache.k, cache.v), reference):
    np.testing.assert_allclose(np.asarray(got[:, 0, :, :13]), np.asarray(want[:, 0]), atol=2e-5)


def test_a_break_where_prompts_stop_sharing_reuses_the_shared_part_bit_for_bit(model):
  shared_part = _prompt(6)
  first, second = shared_part + _prompt(5, offset=20), shared_part + _prompt(7, offset=40)
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  cache = SlotCache.init(model.config, 2, 32)
  cache, _, _ = prefill.fill(cache, 0, first, breaks=(6,))
  cache, hidden, computed = prefill.fill(cache, 1, second, breaks=(6,))
  assert computed == len(second) - 6  # without the break, the chunk at [4, 8) is computed again
  alone, alone_hidden, _ = ChunkedPrefill(model, chunk=CHUNK).fill(
    SlotCache.init(model.config, 2, 32), 1, second, breaks=(6,)
  )
  assert np.array_equal(np.asarray(hidden), np.asarray(alone_hidden))
  for got, want in ((cache.k, alone.k), (cache.v, alone.v)):
    assert np.array_equal(np.asarray(got[:, 1, :, : len(second)]), np.asarray(want[:, 1, :, : len(second)]))
  # Chunked another way, the same tokens are not the same chunks: nothing past the first is reused.
  before = prefill.counts.reused_tokens
  _, _, computed = prefill.fill(cache, 1, second, breaks=(5,))
  assert computed == len(second) - 4 and prefill.counts.reused_tokens == before + 4


def test_a_fill_writes_its_slot_and_leaves_the_others(model):
  prompt = _prompt(10)
  noise = jax.random.normal(jax.random.key(1), SlotCache.init(model.config, 4, 16).k.shape)
  busy = SlotCache.init(model.config, 4, 16).replace(k=noise, v=-noise, lengths=jnp.asarray([3, 5, 7, 9]))
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  filled, hidden, _ = prefill.fill(busy.replace(k=busy.k + 0, v=busy.v + 0), 2, prompt)
  alone, alone_hidden, _ = ChunkedPrefill(model, chunk=CHUNK).fill(SlotCache.init(model.config, 1, 16), 0, prompt)
  assert np.array_equal(np.asarray(hidden), np.asarray(alone_hidden))
  assert np.array_equal(np.asarray(filled.k[:, 2, :, :12]), np.asarray(alone.k[:, 0, :, :12]))
  others = [0, 1, 3]
  assert np.array_equal(np.asarray(filled.k[:, others]), np.asarray(noise[:, others]))
  assert np.array_equal(np.asarray(filled.v[:, 2, :, 12:]), -np.asarray(noise[:, 2, :, 12:]))
  assert filled.lengths.tolist() == [3, 5, 10, 9]


def test_kept_chunks_are_bounded_in_bytes_least_recently_used_first_out():
  one = Chunk(jnp.zeros((2, 1, 1, 4, 2)), jnp.zeros((2, 1, 1, 4, 2)), jnp.zeros((1, 8)))
  kept = PrefixChunks(max_bytes=2 * one.nbytes)
  key = lambda token: ((token,), (0,))
  kept.put(key(1), one)
  kept.put(key(2), one)
  assert kept.get(key(1)) is one  # 1 is now the most recent
  kept.put(key(3), one)
  assert len(kept) == 2 and kept.get(key(2)) is None and kept.get(key(1)) is one
  assert len(PrefixChunks(max_bytes=0)) == 0


def test_bad_prompts_fail_before_any_work(model):
  prefill = ChunkedPrefill(model, chunk=CHUNK)
  cache = SlotCache.init(model.config, 1, 8)
  with pytest.raises(ValueError, match="empty"):
    prefill.fill(cache, 0, [])
  with pytest.raises(ValueError, match="needs 12 cache positions"):
    prefill.fill(cache, 0, _prompt(9))
  with pytest.raises(ValueError, match="context"):
    prefill.next_token_logits([1] * (model.config.max_position_embeddings + 1))
  with pytest.raises(ValueError, match="chunk=0"):
    ChunkedPrefill(model, chunk=0)
