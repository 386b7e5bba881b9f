"""The TPU paged decode kernel over the slot cache, run on CPU by Pallas' TPU interpreter, against
the XLA decode attention; and which of the two each backend and dtype gets."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.decode import paged_decode
from helpsteer_jax.models.decode.decode_attention import CacheRead, num_blocks, ragged_decode_attention
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama, with_unrolled_layers

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

pltpu = pytest.importorskip("jax.experimental.pallas.tpu")

# bf16 inputs: the kernel's result is compared at bf16's resolution (8 bits of mantissa).
BF16_TOL = 3e-2


def test_the_kernel_is_chosen_for_16_bit_caches_on_tpu_only(caplog):
  resolve = paged_decode.resolve
  assert resolve("auto", jnp.bfloat16, "tpu") == "paged"
  assert resolve("auto", jnp.float32, "tpu") == "xla"  # the kernel's dots are bf16 passes
  assert resolve("paged", jnp.float32, "tpu") == "paged"
  assert resolve("auto", jnp.bfloat16, "gpu") == "xla" and resolve("xla", jnp.bfloat16, "tpu") == "xla"
  assert resolve("auto", jnp.float32, "cpu") == "per_slot" and resolve("per_slot", jnp.bfloat16, "tpu") == "per_slot"
  with caplog.at_level(logging.WARNING):
    assert resolve("paged", jnp.bfloat16, "cpu") == "xla"
  assert "TPU kernel" in caplog.text
  with pytest.raises(ValueError, match="decode_attention_impl='flash'"):
    resolve("flash", jnp.bfloat16)
  with pytest.raises(ValueError, match="decode_attention_impl='flash'"):
    get_preset("tiny", decode_attention_impl="flash")
  assert [paged_decode.page_size(s, 128) for s in (1024, 384, 96, 40)] == [128, 128, 32, 8]


def _cache(rng, layers, slots, kv_heads, length, head_dim, dtype):
  shape = (layers, slots, kv_heads, length, head_dim)
  return (jnp.asarray(rng.standard_normal(shape), dtype), jnp.asarray(rng.standard_normal(shape), dtype))


def test_paged_attention_matches_the_xla_blocks_and_writes_the_new_token():
  rng = np.random.default_rng(0)
  layers, slots, kv_heads, groups, length, h, block = 3, 4, 2, 3, 64, 16, 16
  dt = jnp.bfloat16
  cache_k, cache_v = _cache(rng, layers, slots, kv_heads, length, h, dt)
  q = jnp.asarray(rng.standard_normal((slots, kv_heads * groups, h)), dt)
  k_new = jnp.asarray(rng.standard_normal((slots, kv_heads, h)), dt)
  v_new = jnp.asarray(rng.standard_normal((slots, kv_heads, h)), dt)
  lengths = jnp.asarray([5, 17, 0, 40], jnp.int32)
  active = jnp.asarray([True, True, True, False])
  layer = 1
  expected, _ = ragged_decode_attention(
    q, k_new, v_new, CacheRead(cache_k, cache_v, layer, block), lengths, num_blocks(lengths, active, block)
  )
  with pltpu.force_tpu_interpret_mode():
    out, new_k, new_v = jax.jit(paged_decode.paged_decode_attention, static_argnums=(8,))(
      q, k_new, v_new, cache_k, cache_v, layer, lengths, active, block
    )
  real = np.asarray(active)
  np.testing.assert_allclose(
    np.asarray(out, np.float32)[real], np.asarray(expected, np.float32)[real], atol=BF16_TOL, rtol=BF16_TOL
  )
  # Active slots got their token at their length; nothing else changed.
  k_np, new_np = np.asarray(cache_k, np.float32), np.asarray(new_k, np.float32)
  for b in range(slots):
    if real[b]:
      np.testing.assert_array_equal(new_np[layer, b, :, int(lengths[b])], np.asarray(k_new, np.float32)[b])
      k_np[layer, b, :, int(lengths[b])] = new_np[layer, b, :, int(lengths[b])]
  np.testing.assert_array_equal(new_np, k_np)
  assert not np.array_equal(np.asarray(new_v), np.asarray(cache_v))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_a_decode_step_by_the_kernel_keeps_the_logits_and_the_cache(scan_layers):
  config = get_preset("tiny", dtype="bfloat16", param_dtype="bfloat16")
  model = Llama(config, rngs=nnx.Rngs(0))
  model = model if scan_layers else with_unrolled_layers(model)
  rng = np.random.default_rng(1)
  slots, length = 4, 32
  cache_k, cache_v = _cache(rng, config.num_layers, slots, config.num_kv_heads, length, config.head_dim, jnp.bfloat16)
  cache = SlotCache(cache_k, cache_v, jnp.asarray([3, 9, 1, 20], jnp.int32))
  tokens = jnp.asarray([5, 6, 7, 8], jnp.int32)
  active = jnp.asarray([True, True, False, True])
  step = jax.jit(lambda cache, kernel: model.decode_slots(tokens, cache, active, 8, kernel=kernel), static_argnums=(1,))
  logits_xla, cache_xla = step(cache, "xla")
  with pltpu.force_tpu_interpret_mode():
    logits_paged, cache_paged = step(cache, "paged")
  real = np.asarray(active)
  np.testing.assert_allclose(
    np.asarray(logits_paged)[real], np.asarray(logits_xla)[real], atol=BF16_TOL * 4, rtol=BF16_TOL
  )
  np.testing.assert_array_equal(np.asarray(cache_paged.lengths), np.asarray(cache_xla.lengths))
  np.testing.assert_allclose(
    np.asarray(cache_paged.k, np.float32), np.asarray(cache_xla.k, np.float32), atol=BF16_TOL * 4, rtol=BF16_TOL
  )


def test_the_engine_decodes_by_the_kernel_with_the_xla_tokens(monkeypatch):
  from helpsteer_jax.models import llama
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings

  model = Llama(get_preset("tiny", dtype="bfloat16", param_dtype="bfloat16"), rngs=nnx.Rngs(0))
  greedy = SamplingSettings(max_new_tokens=6)

  prompts = [list(range(1, 3 + 4 * i)) for i in range(3)]

  def run():
    requests = [Request(p, greedy, sample_key(0, i)) for i, p in enumerate(prompts)]
    engine = Engine(model, EngineSettings(num_slots=2, attention_block=8))
    for r in requests:
      engine.submit(r)
    engine.run()
    return [r.results[0] for r in requests]

  expected = run()
  chosen = []
  monkeypatch.setattr(llama, "resolve_decode_attention", lambda impl, dtype: chosen.append(impl) or "paged")
  with pltpu.force_tpu_interpret_mode():
    got = run()
  assert chosen  # the decode step was traced with the kernel
  # Greedy tokens agree until a step where the two best logits are closer than bf16 resolves
  # (the paths round differently); from there on they may part.
  for prompt, ours, theirs in zip(prompts, got, expected):
    differ = [t for t, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    if differ:
      t = differ[0]
      logits = np.asarray(model(jnp.asarray([prompt + theirs[:t]]))[0, -1], np.float32)
      assert abs(logits[ours[t]] - logits[theirs[t]]) <= BF16_TOL * max(1.0, np.abs(logits).max())
  assert sum(a == b for ours, theirs in zip(got, expected) for a, b in zip(ours, theirs)) >= 15
