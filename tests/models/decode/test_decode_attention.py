"""Decode attention over a slot cache: each slot reading its own blocks (per_slot) against every slot
read up to the longest (the block loop), a slot's result independent of its neighbours, and the
choice in `Llama.decode_slots`."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.models.decode.decode_attention import CacheRead, per_slot_decode_attention, ragged_decode_attention

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

LAYERS, SLOTS, KV, GROUP, HEAD, LENGTH, BLOCK = 2, 5, 2, 3, 8, 64, 16


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  cache_k, cache_v = normal(LAYERS, SLOTS, KV, LENGTH, HEAD), normal(LAYERS, SLOTS, KV, LENGTH, HEAD)
  return normal(SLOTS, KV * GROUP, HEAD), normal(SLOTS, KV, HEAD), normal(SLOTS, KV, HEAD), cache_k, cache_v


def _dense(q, k_new, v_new, cache_k, cache_v, layer, lengths):
  """softmax over (cache keys < length, the new key), slot by slot, in numpy float64."""
  out = np.zeros(q.shape)
  q, k_new, v_new = (np.asarray(x, np.float64) for x in (q, k_new, v_new))
  for b in range(q.shape[0]):
    for n in range(q.shape[1]):
      kv = n // GROUP
      keys = np.concatenate([np.asarray(cache_k[layer, b, kv, : lengths[b]]), k_new[b, kv][None]])
      values = np.concatenate([np.asarray(cache_v[layer, b, kv, : lengths[b]]), v_new[b, kv][None]])
      s = keys @ q[b, n] / math.sqrt(HEAD)
      p = np.exp(s - s.max())
      out[b, n] = (p / p.sum()) @ values
  return out


@pytest.mark.parametrize("group", [1, 3, 16])
def test_per_slot_blocks_give_the_attention_of_the_block_loop(group):
  q, k_new, v_new, cache_k, cache_v = _inputs()
  lengths = jnp.asarray([0, 17, 64, 5, 32], jnp.int32)  # empty, partial and whole blocks
  active = jnp.asarray([True, True, True, False, True])
  read = CacheRead(cache_k, cache_v, 1, BLOCK)
  ours, (same_k, same_v) = per_slot_decode_attention(q, k_new, v_new, read, lengths, active, group=group)
  loop, _ = ragged_decode_attention(q, k_new, v_new, read, lengths, jnp.asarray(4))
  want = _dense(q, k_new, v_new, cache_k, cache_v, 1, np.asarray(lengths))
  live = np.asarray(active)
  np.testing.assert_allclose(np.asarray(ours)[live], want[live], atol=2e-6)
  np.testing.assert_allclose(np.asarray(ours)[live], np.asarray(loop)[live], atol=2e-6)
  assert same_k is cache_k and same_v is cache_v


def test_a_slot_reads_the_same_whatever_its_neighbours_hold():
  q, k_new, v_new, cache_k, cache_v = _inputs()
  read = CacheRead(cache_k, cache_v, 0, BLOCK)
  alone = per_slot_decode_attention(
    q, k_new, v_new, read, jnp.asarray([0, 0, 37, 0, 0]), jnp.asarray([False, False, True, False, False])
  )[0]
  busy = per_slot_decode_attention(
    q, k_new, v_new, read, jnp.asarray([64, 3, 37, 50, 9]), jnp.ones(SLOTS, bool), group=2
  )[0]
  assert np.array_equal(np.asarray(alone[2]), np.asarray(busy[2]))


def test_the_cache_threads_through_when_asked_and_bad_lengths_fail():
  q, k_new, v_new, cache_k, cache_v = _inputs()
  lengths, active = jnp.asarray([9, 20, 1, 40, 64]), jnp.ones(SLOTS, bool)
  threaded, (k, v) = jax.jit(
    lambda q, k_new, v_new, ck, cv: per_slot_decode_attention(
      q, k_new, v_new, CacheRead(ck, cv, 1, BLOCK, thread=True), lengths, active
    )
  )(q, k_new, v_new, cache_k, cache_v)
  plain, _ = per_slot_decode_attention(q, k_new, v_new, CacheRead(cache_k, cache_v, 1, BLOCK), lengths, active)
  np.testing.assert_allclose(np.asarray(threaded), np.asarray(plain), atol=1e-6)
  assert np.array_equal(np.asarray(k), np.asarray(cache_k)) and np.array_equal(np.asarray(v), np.asarray(cache_v))
  with pytest.raises(ValueError, match="not a multiple of the block"):
    per_slot_decode_attention(q, k_new, v_new, CacheRead(cache_k, cache_v, 0, 24), lengths, active)


def test_decode_slots_per_slot_and_block_loop_agree_and_one_slot_falls_back(monkeypatch):
  from flax import nnx

  from helpsteer_jax.models import llama
  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.decode.slot_cache import SlotCache

  model = llama.Llama(get_preset("tiny"), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  cache = SlotCache.init(model.config, 3, 32)
  noise = jnp.asarray(rng.standard_normal(cache.k.shape), cache.k.dtype)
  cache = cache.replace(k=noise, v=-noise, lengths=jnp.asarray([3, 20, 9], jnp.int32))
  tokens, active = jnp.asarray([5, 6, 7]), jnp.asarray([True, True, False])
  per_slot, _ = model.decode_slots(tokens, cache, active, block=8, kernel="per_slot")
  loop, _ = model.decode_slots(tokens, cache, active, block=8, kernel="xla")
  np.testing.assert_allclose(np.asarray(per_slot)[:2], np.asarray(loop)[:2], atol=1e-5)
  called = []
  monkeypatch.setattr(llama, "per_slot_decode_attention", lambda *a, **k: called.append(1))
  one = cache.replace(k=cache.k[:, :1], v=cache.v[:, :1], lengths=cache.lengths[:1])
  single, _ = model.decode_slots(tokens[:1], one, active[:1], block=8, kernel="per_slot")
  np.testing.assert_allclose(np.asarray(single), np.asarray(loop)[:1], atol=1e-5)
  assert not called
