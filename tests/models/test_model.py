"""The network on tiny configs: slot decoding == full forward, padding and packing isolation, remat, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _ids(shape, seed=0, vocab=512):
  return jnp.asarray(np.random.RandomState(seed).randint(0, vocab, shape), jnp.int32)


@pytest.mark.parametrize("scan", [True, False])
def test_slot_decoding_equals_full_forward(scan):
  # Two slots at different lengths: each prefilled with its own prompt, then both decode one
  # token a step at their own positions.
  config = get_preset("tiny", scan_layers=scan)
  model = Llama(config, rngs=nnx.Rngs(0))
  short, long = _ids((1, 11), seed=1), _ids((1, 14), seed=2)
  chunks = ChunkedPrefill(model, chunk=4, keep_bytes=0)
  cache = SlotCache.init(config, 2, 32, keys_transposed=model.slot_keys_transposed())
  cache, _, _ = chunks.fill(cache, 0, short[0, :5].tolist())
  cache, _, _ = chunks.fill(cache, 1, long[0, :9].tolist())
  pieces = [[], []]
  for step in range(6):
    tokens = jnp.asarray([short[0, 5 + step], long[0, 9 + step] if 9 + step < 14 else 0])
    active = jnp.asarray([True, 9 + step < 14])
    logits, cache = model.decode_slots(tokens, cache, active, block=8)
    pieces[0].append(logits[0])
    if 9 + step < 14:
      pieces[1].append(logits[1])
  np.testing.assert_allclose(jnp.stack(pieces[0]), model(short)[0, 5:], atol=1e-5)
  np.testing.assert_allclose(jnp.stack(pieces[1]), model(long)[0, 9:], atol=1e-5)
  assert cache.lengths.tolist() == [11, 14]


def test_left_padded_rows_match_unpadded():
  config = get_preset("tiny")
  model = Llama(config, rngs=nnx.Rngs(1))
  short, long = _ids((1, 5), seed=1), _ids((1, 9), seed=2)
  padded = jnp.concatenate([jnp.zeros((1, 4), jnp.int32), short], axis=1)
  mask = jnp.asarray([[False] * 4 + [True] * 5, [True] * 9])
  logits = model(jnp.concatenate([padded, long]), input_mask=mask)
  np.testing.assert_allclose(logits[0, 4:], model(short)[0], atol=1e-5)
  np.testing.assert_allclose(logits[1], model(long)[0], atol=1e-5)


def test_packed_segments_do_not_attend_across():
  model = Llama(get_preset("tiny"), rngs=nnx.Rngs(2))
  a, b = _ids((1, 6), seed=3), _ids((1, 4), seed=4)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], axis=1)
  segments = jnp.asarray([[1] * 6 + [2] * 4 + [0] * 2])
  positions = jnp.asarray([list(range(6)) + list(range(4)) + [0, 0]])
  logits = model(packed, segment_ids=segments, positions=positions)
  np.testing.assert_allclose(logits[:, :6], model(a), atol=1e-5)
  np.testing.assert_allclose(logits[:, 6:10], model(b), atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch", "dots_no_batch_attention", "save_qkv_proj"])
def test_remat_policies_give_the_same_gradients(policy):
  ids = _ids((2, 128))  # long enough for the blocked causal attention and its own backward
  loss = lambda m: jnp.mean(m(ids) ** 2)
  base = nnx.grad(loss)(Llama(get_preset("tiny"), rngs=nnx.Rngs(0)))
  remat = nnx.grad(loss)(Llama(get_preset("tiny", remat_policy=policy), rngs=nnx.Rngs(0)))
  for g0, g1 in zip(jax.tree.leaves(base), jax.tree.leaves(remat)):
    np.testing.assert_allclose(g0, g1, atol=1e-6)


def test_bf16_compute_and_params():
  config = get_preset("tiny", dtype="bfloat16", param_dtype="bfloat16")
  model = Llama(config, rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  logits = model(_ids((1, 8)))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
  fp32 = Llama(get_preset("tiny"), rngs=nnx.Rngs(0))(_ids((1, 8)))
  assert float(jnp.max(jnp.abs(logits - fp32))) < 0.1  # same weights up to bf16 rounding


def test_every_parameter_has_logical_axes_of_its_rank():
  for scan in (True, False):
    model = Llama(get_preset("tiny", scan_layers=scan), rngs=nnx.Rngs(0))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
      axes = var.get_metadata()["logical_axes"]
      assert len(axes) == var.get_value().ndim


def test_causal_blocks_equal_dense_attention_and_its_gradient():
  """The block-skipping path (long causal chunks) against every score computed, with packed
  segments and a padding row with no visible key, values and gradients."""
  from helpsteer_jax.models.layers import _dense_attention, grouped_query_attention

  b, t, n, k, h = 2, 256, 6, 2, 8
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, t, n, h))
  kk = jax.random.normal(keys[1], (b, k, t, h))
  vv = jax.random.normal(keys[2], (b, k, t, h))
  segment = jnp.asarray([[1] * 100 + [2] * 156, [0] * 30 + [1] * 226])  # row 1 starts with padding
  mask = (
    jnp.tril(jnp.ones((t, t), bool))[None] & (segment[:, :, None] == segment[:, None, :]) & (segment != 0)[:, None, :]
  )
  cotangent = jax.random.normal(keys[3], q.shape)

  def loss(fn, q, kk, vv):
    return jnp.vdot(fn(q, kk, vv), cotangent)

  blocked = lambda q, kk, vv: grouped_query_attention(q, [(kk, vv, mask)], causal=True)
  dense = lambda q, kk, vv: _dense_attention(q, [(kk, vv, mask)])
  np.testing.assert_allclose(blocked(q, kk, vv), dense(q, kk, vv), atol=1e-5)
  assert float(jnp.abs(blocked(q, kk, vv)[1, :30]).max()) == 0.0  # padding rows give zeros
  g_blocked = jax.grad(lambda *a: loss(blocked, *a), argnums=(0, 1, 2))(q, kk, vv)
  g_dense = jax.grad(lambda *a: loss(dense, *a), argnums=(0, 1, 2))(q, kk, vv)
  for a, d in zip(g_blocked, g_dense):
    assert bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_allclose(a, d, atol=1e-4)


def test_blocked_causal_attention_in_bf16_and_bad_shapes():
  """bf16 operands keep their dtype through the custom backward and stay near the fp32 result."""
  from helpsteer_jax.models.causal_attention import blocked_causal_attention

  b, t, n, k, h = 2, 128, 4, 2, 16
  keys = jax.random.split(jax.random.key(1), 4)
  q, kk, vv = (jax.random.normal(keys[i], s) for i, s in enumerate([(b, t, n, h), (b, k, t, h), (b, k, t, h)]))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
  cotangent = jax.random.normal(keys[3], q.shape)
  loss = lambda q, kk, vv: jnp.vdot(blocked_causal_attention(q, kk, vv, mask, 32).astype(jnp.float32), cotangent)
  g32 = jax.grad(loss, argnums=(0, 1, 2))(q, kk, vv)
  bf = [x.astype(jnp.bfloat16) for x in (q, kk, vv)]
  assert blocked_causal_attention(*bf, mask, 32).dtype == jnp.bfloat16
  g16 = jax.grad(loss, argnums=(0, 1, 2))(*bf)
  for a, c in zip(g16, g32):
    assert a.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(a.astype(jnp.float32) - c))) < 0.05 * float(jnp.max(jnp.abs(c)))
  with pytest.raises(ValueError, match="keys for"):
    blocked_causal_attention(q, kk[:, :, :64], vv[:, :, :64], mask, 32)
  with pytest.raises(ValueError, match="kv heads"):
    blocked_causal_attention(q[:, :, :3], kk, vv, mask, 32)
