"""Decode weight layouts (models/decode/decode_layout.py): fused projections give the decode step of the
model's own layers, switched layers give it bit for bit, and conversions are kept per model until
its weights change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.decode.decode_layout import DecodeLayouts, with_fused_projections, with_switched_layers
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.mesh import make_mesh
from helpsteer_jax.parallel.partitioning import ShardingContext

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _step(m, cache, tokens):
  return m.decode_slots(tokens, cache, jnp.ones(tokens.shape, bool), block=8)


def test_fused_projections_decode_as_the_model_layers(model):
  fused = with_fused_projections(model)
  assert not fused.config.scan_layers and len(fused.layers) == model.config.num_layers
  rng = np.random.default_rng(0)
  cache = SlotCache.init(model.config, 2, 32)
  c = model.config
  shape = (c.num_layers, 2, c.num_kv_heads, 32, c.head_dim)
  cache = cache.replace(
    k=jnp.asarray(rng.standard_normal(shape), jnp.float32),
    v=jnp.asarray(rng.standard_normal(shape), jnp.float32),
    lengths=jnp.asarray([3, 17], jnp.int32),
  )
  tokens = jnp.asarray([11, 29], jnp.int32)
  want_logits, want_cache = _step(model, cache, tokens)
  got_logits, got_cache = _step(fused, cache, tokens)
  np.testing.assert_allclose(np.asarray(got_logits), np.asarray(want_logits), atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got_cache.k), np.asarray(want_cache.k), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(got_cache.lengths), [4, 18])
  # The blocks keep their interface, so the full forward runs on the fused weights too.
  ids = jnp.asarray([[3, 1, 4, 1, 5]])
  np.testing.assert_allclose(np.asarray(fused(ids)), np.asarray(model(ids)), atol=2e-5, rtol=1e-5)


def test_switched_layers_decode_and_prefill_as_the_model_layers_bit_for_bit(model):
  switched = with_switched_layers(model)
  assert switched.config.switch_layers and not switched.config.scan_layers
  assert not model.config.switch_layers
  rng = np.random.default_rng(1)
  c = model.config
  shape = (c.num_layers, 2, c.num_kv_heads, 32, c.head_dim)
  cache = SlotCache.init(model.config, 2, 32).replace(
    k=jnp.asarray(rng.standard_normal(shape), jnp.float32),
    v=jnp.asarray(rng.standard_normal(shape), jnp.float32),
    lengths=jnp.asarray([5, 20], jnp.int32),
  )
  tokens = jnp.asarray([7, 40], jnp.int32)
  want_logits, want_cache = jax.jit(_step)(model, cache, tokens)
  got_logits, got_cache = jax.jit(_step)(switched, cache, tokens)
  np.testing.assert_array_equal(np.asarray(got_logits), np.asarray(want_logits))
  np.testing.assert_array_equal(np.asarray(got_cache.k), np.asarray(want_cache.k))
  chunk = lambda m: m.prefill_chunk(
    jnp.asarray([[3, 1, 4, 1, 5, 9, 2, 6]]), cache, jnp.asarray(1), jnp.asarray(8), jnp.asarray(7), 8
  )
  for got, want in zip(jax.jit(chunk)(switched), jax.jit(chunk)(model)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # One traced body serves every layer: each of its 7 products switches on the layer index.
  assert jax.jit(_step).lower(switched, cache, tokens).as_text().count("stablehlo.case") == 7
  assert "stablehlo.case" not in jax.jit(_step).lower(model, cache, tokens).as_text()
  # The full forward of a switched model is the unrolled loop's.
  ids = jnp.asarray([[3, 1, 4, 1, 5]])
  np.testing.assert_allclose(np.asarray(switched(ids)), np.asarray(model(ids)), atol=2e-5, rtol=1e-5)


def test_conversions_are_kept_until_the_weights_change():
  layouts = DecodeLayouts()
  m = Llama(get_preset("tiny"), rngs=nnx.Rngs(1))
  assert layouts.get(m, "model") is m
  first = layouts.get(m, "fused")
  assert layouts.get(m, "fused") is first
  unrolled = layouts.get(m, "unrolled")
  assert unrolled is not first and layouts.get(m, "unrolled") is unrolled
  switched = layouts.get(m, "switched")
  assert layouts.get(m, "switched") is switched
  # It runs on the unrolled copy's arrays: no third copy of the weights.
  assert switched.layers[0].mlp.up_proj[...] is unrolled.layers[0].mlp.up_proj[...]
  # A weight update (as a training step makes) converts again, from the new weights.
  new_embed = m.embed[...] * 2.0
  m.embed[...] = new_embed
  again = layouts.get(m, "fused")
  assert again is not first
  np.testing.assert_array_equal(np.asarray(again.embed[...]), np.asarray(new_embed))
  with pytest.raises(ValueError, match="layout='sideways'"):
    layouts.get(m, "sideways")


def test_fused_projections_refuse_a_sharded_model():
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs the fake CPU devices of conftest")
  mesh = make_mesh((1, 2, 1), devices[:2])
  sharded = Llama(get_preset("tiny"), rngs=nnx.Rngs(0), sharding=ShardingContext(mesh))
  with pytest.raises(ValueError, match="single device"):
    with_fused_projections(sharded)
  with pytest.raises(ValueError, match="single device"):
    with_switched_layers(sharded)
