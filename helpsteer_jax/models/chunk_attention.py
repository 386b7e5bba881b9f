"""Attention of a prompt chunk against the earlier chunks of its own slot in a slot cache.

A prompt is prefilled in chunks of a fixed length C (sampling/chunked_prefill.py): the same few
compiled programs serve every prompt length, and chunk j, which depends only on tokens [0, (j+1) C), can be
kept and reused by any later prompt with the same first (j+1) C tokens. Chunk j starts at position
j C, so the cache positions it reads, [0, j C), are whole blocks of C positions that all hold real
tokens: no length mask is needed, and only the blocks before the chunk are read (a dynamic trip
count).

The softmax is accumulated online, starting from the chunk's own causal scores: every query sees
at least its own key, so the running max is finite from the start.

Shapes: q [1, T, N, H]; k, v [1, T, K, H] (the chunk's own T <= C keys and values); cache_k,
cache_v [L, B, K, S, H]; `slot` and `start` (a multiple of C) index the slot row and the chunk's
first position. G = N / K query heads share a kv head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from helpsteer_jax.models.causal_attention import group_query_heads, ungroup_query_heads
from helpsteer_jax.models.decode_attention import loop_over_blocks, online_softmax_update


def chunk_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    cache_k: jax.Array,
    cache_v: jax.Array,
    layer: jax.Array | int,
    slot: jax.Array,
    start: jax.Array,
    block: int,
    thread_cache: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """softmax over (cache keys < start, chunk keys <= the query) of q k / sqrt(H), times v ->
  [1, T, N, H], and the cache (carried through the loop with `thread_cache`: see
  decode_attention.loop_over_blocks). The cache is read `block` positions at a time (`start` is a
  multiple of it); the chunk's own T tokens may be fewer (a prompt's last, narrower chunk)."""
  _, c, n, h = q.shape
  kv_heads = k.shape[2]
  g = n // kv_heads
  f32 = jnp.float32
  qg = group_query_heads((q.astype(f32) * (1.0 / math.sqrt(h))).astype(q.dtype), kv_heads)  # [1, K, G*C, H]
  kc, vc = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [1, K, C, H]
  s = jnp.einsum("BKQH,BKSH->BKQS", qg, kc, preferred_element_type=f32).reshape(1, kv_heads, g, c, c)
  causal = jnp.tril(jnp.ones((c, c), bool))
  s = jnp.where(causal, s, -jnp.inf).reshape(1, kv_heads, g * c, c)
  m = jnp.max(s, axis=-1)  # [1, K, G*C]
  p = jnp.exp(s - m[..., None])
  denom = jnp.sum(p, axis=-1)
  acc = jnp.einsum("BKQS,BKSH->BKQH", p.astype(vc.dtype), vc, preferred_element_type=f32)

  def body(i, carry, cache_k, cache_v):
    m, denom, acc = carry
    at = (layer, slot, 0, i * block, 0)
    size = (1, 1, kv_heads, block, h)
    kb = jax.lax.dynamic_slice(cache_k, at, size)[0].astype(q.dtype)  # [1, K, C, H]
    vb = jax.lax.dynamic_slice(cache_v, at, size)[0].astype(q.dtype)
    s = jnp.einsum("BKQH,BKSH->BKQS", qg, kb, preferred_element_type=f32)
    return online_softmax_update(m, denom, acc, s, vb)

  (m, denom, acc), cache = loop_over_blocks(start // block, body, (m, denom, acc), cache_k, cache_v,
                                            thread_cache)
  return ungroup_query_heads(acc / denom[..., None], c).astype(q.dtype), cache
