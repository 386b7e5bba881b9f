"""Slot caches whose keys are stored transposed, [L, B, K, H, S]: the same attention, prefill and
engine tokens bit for bit as keys [L, B, K, S, H], the cache's own writes in either layout, the
choice per backend and kernel, and the paged kernel's refusal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.models import llama
from helpsteer_jax.models.decode.chunk_attention import chunk_attention
from helpsteer_jax.models.decode.decode_attention import CacheRead, per_slot_decode_attention, ragged_decode_attention
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.sampler import SamplingSettings

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

LAYERS, SLOTS, KV, GROUP, HEAD, LENGTH, BLOCK = 2, 4, 2, 3, 8, 48, 16


def _normal(rng, *shape):
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("kernel", ["per_slot", "xla"])
@pytest.mark.parametrize("thread_cache", [False, True])
def test_decode_attention_over_transposed_keys_is_the_same_bit_for_bit(kernel, thread_cache):
  rng = np.random.default_rng(0)
  q, k_new, v_new = _normal(rng, SLOTS, KV * GROUP, HEAD), _normal(rng, SLOTS, KV, HEAD), _normal(rng, SLOTS, KV, HEAD)
  cache_k, cache_v = _normal(rng, LAYERS, SLOTS, KV, LENGTH, HEAD), _normal(rng, LAYERS, SLOTS, KV, LENGTH, HEAD)
  lengths, active = jnp.asarray([0, 17, 48, 30], jnp.int32), jnp.asarray([True, True, True, False])

  def attend(keys, transposed):
    if kernel == "per_slot":
      fn = lambda k, v: per_slot_decode_attention(
        q, k_new, v_new, CacheRead(k, v, 1, BLOCK, thread_cache, transposed), lengths, active
      )
    else:
      fn = lambda k, v: ragged_decode_attention(
        q, k_new, v_new, CacheRead(k, v, 1, BLOCK, thread_cache, transposed), lengths, jnp.asarray(3)
      )
    out, (k, _) = jax.jit(fn)(keys, cache_v)
    return np.asarray(out), np.asarray(k)

  plain, plain_k = attend(cache_k, False)
  transposed, transposed_k = attend(cache_k.swapaxes(3, 4), True)
  assert np.array_equal(plain, transposed)
  assert np.array_equal(plain_k, np.asarray(cache_k)) and np.array_equal(transposed_k.swapaxes(3, 4), plain_k)


@pytest.mark.parametrize("start", [0, 16, 21])  # no context, aligned, inside a block
def test_chunk_attention_over_transposed_keys_is_the_same_bit_for_bit(start):
  rng = np.random.default_rng(1)
  chunk = 16
  q = _normal(rng, 1, chunk, KV * GROUP, HEAD)
  k, v = _normal(rng, 1, chunk, KV, HEAD), _normal(rng, 1, chunk, KV, HEAD)
  cache_k, cache_v = _normal(rng, LAYERS, SLOTS, KV, LENGTH, HEAD), _normal(rng, LAYERS, SLOTS, KV, LENGTH, HEAD)
  slot = jnp.asarray(2, jnp.int32)
  run = lambda keys, transposed: np.asarray(
    jax.jit(
      lambda keys: chunk_attention(
        q, k, v, CacheRead(keys, cache_v, 0, chunk, keys_transposed=transposed), slot, jnp.asarray(start)
      )[0]
    )(keys)
  )
  assert np.array_equal(run(cache_k, False), run(cache_k.swapaxes(3, 4), True))


def test_the_caches_writes_agree_across_layouts(model):
  config = model.config
  rng = np.random.default_rng(2)
  caches = [SlotCache.init(config, 3, 16, keys_transposed=t) for t in (False, True)]
  assert caches[1].k.shape[3:] == (config.head_dim, 16) and caches[1].max_length == 16
  chunk_k = _normal(rng, config.num_layers, 1, config.num_kv_heads, 5, config.head_dim)
  chunk_v = _normal(rng, config.num_layers, 1, config.num_kv_heads, 5, config.head_dim)
  new_k = _normal(rng, config.num_layers, 3, config.num_kv_heads, config.head_dim)
  active = jnp.asarray([True, False, True])
  for i, cache in enumerate(caches):
    cache = cache.write(chunk_k, chunk_v, jnp.asarray(1), jnp.asarray(3)).replace(
      lengths=jnp.asarray([2, 8, 15], jnp.int32)
    )
    cache = cache.append(new_k, -new_k, active).grow(32)
    caches[i] = cache
  plain, transposed = caches
  assert transposed.max_length == plain.max_length == 32 and transposed.k.shape[4] == 32
  assert np.array_equal(np.asarray(plain.keys_by_position()), np.asarray(transposed.keys_by_position()))
  assert np.array_equal(np.asarray(plain.v), np.asarray(transposed.v))
  assert np.array_equal(np.asarray(plain.keys_by_position()[:, 1, :, 3:8]), np.asarray(chunk_k[:, 0]))
  assert np.array_equal(np.asarray(plain.keys_by_position()[:, 2, :, 15]), np.asarray(new_k[:, 2]))
  assert plain.lengths.tolist() == transposed.lengths.tolist() == [3, 8, 16]


def test_the_engine_gives_the_same_tokens_with_either_layout(model, monkeypatch):
  assert model.slot_keys_transposed()  # on CPU, XLA attention
  sampled = SamplingSettings(max_new_tokens=10, temperature=1.0, top_p=0.9)
  prompts = [[5, 6, 7], list(range(1, 20)), [42], [9] * 6, [3, 1, 4, 1, 5]]
  results = {}
  for transposed in (False, True):
    monkeypatch.setattr(llama.Llama, "slot_keys_transposed", lambda self, dtype=None, t=transposed: t)
    engine = Engine(model, EngineSettings(num_slots=2, attention_block=4, prefill_chunk=8))
    requests = [Request(p, sampled, sample_key(5, i), n=2) for i, p in enumerate(prompts)]
    for r in requests:
      engine.submit(r)
    engine.run()
    assert engine._state.cache.keys_transposed is transposed
    results[transposed] = [r.results for r in requests]
  assert results[False] == results[True]


def test_the_paged_kernel_keeps_keys_by_position_and_refuses_transposed_ones(model, monkeypatch):
  monkeypatch.setattr(llama, "resolve_decode_attention", lambda impl, dtype: "paged")
  assert not model.slot_keys_transposed()
  cache = SlotCache.init(model.config, 2, 16, keys_transposed=True)
  with pytest.raises(ValueError, match="paged decode kernel reads keys"):
    model.decode_slots(jnp.asarray([1, 2]), cache, jnp.asarray([True, True]), block=8)
