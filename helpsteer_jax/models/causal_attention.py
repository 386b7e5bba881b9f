"""Causal self-attention over query blocks, with a backward pass that keeps only O and logsumexp.

Autodiff through softmax(q k^T) v keeps (or, under remat, recomputes) the [Q, S] probabilities and
differentiates max, exp, sum and divide one by one. This function's custom VJP does what flash
attention does instead: the forward saves the output O and each row's logsumexp L, and the
backward rebuilds P = exp(q k^T - L) in one pass and uses dS = P * (dO v^T - rowsum(dO * O)),
whose row sum runs over the H head dimensions rather than the S keys. Both passes go block by
block over the queries, each block attending only to the keys up to its own end, so the all-masked
upper triangle is skipped. Measured in the SmolLM2 SFT step on XLA:CPU (8 x 512 tokens), with the
remat policy `dots_no_batch_attention` keeping O and L: 18.2 s against 19.9 s for autodiff
through the same blocks.

Shapes: q [B, T, N, H]; k, v [B, K, T, H] with K kv-heads shared by G = N / K query heads each;
mask [B, T, T] (True = may attend; it must allow no future key). Query rows with no visible key
(padding) give zeros and get no gradient.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

# Names of the saved forward results, for remat policies that keep them (see models/llama.py).
OUTPUT_NAME = "attention_out"
LOGSUMEXP_NAME = "attention_lse"

# The score of a masked (query, key) pair: exp(FLOOR - max) is 0, and a row of them stays finite.
FLOOR = float(jnp.finfo(jnp.float32).min)


def query_blocks(t: int, block: int) -> list[tuple[int, int]]:
  """(start, end) of each block of `block` query positions (the last may be shorter)."""
  return [(start, min(start + block, t)) for start in range(0, t, block)]


def group_query_heads(q: jax.Array, kv_heads: int) -> jax.Array:
  """[B, t, N, H] -> [B, K, G * t, H]: the G query heads of a kv head and their positions on one
  axis, so every dot, forward and backward, contracts a single axis."""
  b, t, n, h = q.shape
  g = n // kv_heads
  return q.reshape(b, t, kv_heads, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, g * t, h)


def ungroup_query_heads(x: jax.Array, t: int) -> jax.Array:
  """[B, K, G * t, H] -> [B, t, N, H]."""
  b, kv_heads, gt, h = x.shape
  g = gt // t
  return x.reshape(b, kv_heads, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, kv_heads * g, h)


def _masked_scores(qg: jax.Array, k: jax.Array, mask: jax.Array, g: int) -> jax.Array:
  """qg [B, K, G*t, H] (already scaled), k [B, K, s, H], mask [B, t, s] -> scores [B, K, G, t, s]."""
  b, kv_heads, gt, _ = qg.shape
  s = jnp.einsum("BKQH,BKSH->BKQS", qg, k, preferred_element_type=jnp.float32)
  s = s.reshape(b, kv_heads, g, gt // g, k.shape[2])
  return jnp.where(mask[:, None, None], s, FLOOR)


def _forward(q, k, v, mask, block):
  b, t, n, h = q.shape
  kv_heads = k.shape[1]
  g = n // kv_heads
  scale = 1.0 / math.sqrt(h)
  outs, lses = [], []
  for start, end in query_blocks(t, block):
    qg = group_query_heads(q[:, start:end] * jnp.asarray(scale, q.dtype), kv_heads)
    scores = _masked_scores(qg, k[:, :, :end], mask[:, start:end, :end], g)  # [B, K, G, tb, end]
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - row_max)
    row_sum = jnp.sum(p, axis=-1, keepdims=True)
    p = p.reshape(b, kv_heads, g * (end - start), end).astype(v.dtype)
    # Normalise after the product: a pass over [.., H] instead of one over the [.., S] probabilities.
    o = jnp.einsum("BKQS,BKSH->BKQH", p, v[:, :, :end], preferred_element_type=jnp.float32)
    o = o / row_sum.reshape(b, kv_heads, g * (end - start), 1)
    outs.append(ungroup_query_heads(o, end - start))  # [B, tb, N, H]
    lses.append((row_max + jnp.log(row_sum))[..., 0])  # [B, K, G, tb]
  visible = jnp.any(mask, axis=-1)  # [B, T]
  out = jnp.where(visible[:, :, None, None], jnp.concatenate(outs, axis=1), 0.0).astype(q.dtype)
  return out, jnp.concatenate(lses, axis=-1)  # [B, T, N, H], [B, K, G, T]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, block):
  return _forward(q, k, v, mask, block)[0]


def _attention_fwd(q, k, v, mask, block):
  out, lse = _forward(q, k, v, mask, block)
  out = checkpoint_name(out, OUTPUT_NAME)
  lse = checkpoint_name(lse, LOGSUMEXP_NAME)
  return out, (q, k, v, mask, out, lse)


def _attention_bwd(block, residuals, d_out):
  q, k, v, mask, out, lse = residuals
  b, t, n, h = q.shape
  kv_heads = k.shape[1]
  g = n // kv_heads
  dt = q.dtype  # dot operands stay in the compute dtype; products accumulate in fp32
  f32 = jnp.float32
  scale = 1.0 / math.sqrt(h)
  visible = jnp.any(mask, axis=-1)
  d_out = jnp.where(visible[:, :, None, None], d_out, 0.0)
  # rowsum(dO * O) over the head dimensions: the softmax backward's per-row term.
  delta = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1)  # [B, T, N]
  delta = delta.reshape(b, t, kv_heads, g).transpose(0, 2, 3, 1)  # [B, K, G, T]
  d_out = d_out.astype(dt)
  dq_blocks = []
  dk = jnp.zeros(k.shape, f32)
  dv = jnp.zeros(v.shape, f32)
  for start, end in query_blocks(t, block):
    tb = end - start
    qg = group_query_heads(q[:, start:end] * jnp.asarray(scale, dt), kv_heads)  # [B, K, G*tb, H]
    scores = _masked_scores(qg, k[:, :, :end], mask[:, start:end, :end], g)
    p = jnp.exp(scores - lse[..., start:end, None])  # [B, K, G, tb, end]; 0 where masked
    do_g = group_query_heads(d_out[:, start:end], kv_heads)  # [B, K, G*tb, H]
    dp = jnp.einsum("BKQH,BKSH->BKQS", do_g, v[:, :, :end], preferred_element_type=f32)
    ds = (p * (dp.reshape(p.shape) - delta[..., start:end, None])).reshape(b, kv_heads, g * tb, end).astype(dt)
    p = p.reshape(b, kv_heads, g * tb, end).astype(dt)
    dq_g = jnp.einsum("BKQS,BKSH->BKQH", ds, k[:, :, :end], preferred_element_type=f32)
    dq_blocks.append(ungroup_query_heads(dq_g, tb))
    dk = dk.at[:, :, :end].add(jnp.einsum("BKQS,BKQH->BKSH", ds, qg, preferred_element_type=f32))
    dv = dv.at[:, :, :end].add(jnp.einsum("BKQS,BKQH->BKSH", p, do_g, preferred_element_type=f32))
  dq = jnp.concatenate(dq_blocks, axis=1) * scale
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def blocked_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, block: int) -> jax.Array:
  """q [B, T, N, H], k and v [B, K, T, H], mask [B, T, T] -> [B, T, N, H] (see the module doc)."""
  if k.shape[2] != q.shape[1] or mask.shape[-1] != q.shape[1]:
    raise ValueError(f"causal attention over {k.shape[2]} keys for {q.shape[1]} queries; expected equal")
  if q.shape[2] % k.shape[1]:
    raise ValueError(f"{q.shape[2]} query heads do not divide into {k.shape[1]} kv heads")
  return _attention(q, k, v, mask, block)
