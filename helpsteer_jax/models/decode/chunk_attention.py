"""Attention of a prompt chunk against the earlier chunks of its own slot in a slot cache.

A prompt is prefilled in chunks of at most C tokens (sampling/chunked_prefill.py): the same few
compiled programs serve every prompt length, and a chunk, which depends only on the tokens up to its
end, can be kept and reused by any later prompt that starts with them. Chunks usually start at
multiples of C, but a prompt may also break a chunk where it stops sharing tokens with related
prompts, so a chunk may start anywhere: the cache positions it reads, [0, start), are read in blocks
of C positions (a dynamic trip count, ceil(start / C)), and the last block's positions from `start`
on, which hold the chunk's own keys or leftovers, are masked out.

The softmax is accumulated online, starting from the chunk's own causal scores: every query sees
at least its own key, so the running max is finite from the start.

Shapes: q [1, T, N, H]; k, v [1, T, K, H] (the chunk's own T <= C keys and values); cache_k,
cache_v [L, B, K, S, H] (cache_k [L, B, K, H, S] with `keys_transposed`: models/decode/slot_cache.py);
`slot` and `start` index the slot row and the chunk's first position. G = N / K query heads share a
kv head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from helpsteer_jax.models.causal_attention import group_query_heads, ungroup_query_heads
from helpsteer_jax.models.decode.decode_attention import (
  CacheRead,
  block_scores,
  key_block,
  loop_over_blocks,
  online_softmax_update,
  value_block,
)


def chunk_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  read: CacheRead,
  slot: jax.Array,
  start: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """softmax over (cache keys < start, chunk keys <= the query) of q k / sqrt(H), times v ->
  [1, T, N, H], and the cache (carried through the loop with `read.thread`: see
  decode_attention.loop_over_blocks). The cache is read `block` positions at a time; the chunk's
  own T tokens may be fewer (a prompt's last, narrower chunk)."""
  cache_k, cache_v, layer, block, thread_cache, keys_transposed = read.unpack()
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
    kb = key_block(cache_k, layer, slot, i * block, 1, block, keys_transposed)  # [1, K, C, H] or [1, K, H, C]
    vb = value_block(cache_v, layer, slot, i * block, 1, block).astype(q.dtype)
    # Positions from `start` on (only in the last block of an unaligned chunk) are not context. A
    # select is exact where nothing is masked, so aligned chunks compute what they always did.
    before = (i * block + jnp.arange(block)) < start  # [C]
    vb = jnp.where(before[:, None], vb, jnp.zeros((), vb.dtype))  # no stale value reaches 0 * v
    s = block_scores(qg, kb, keys_transposed)
    s = jnp.where(before, s, -jnp.inf)
    return online_softmax_update(m, denom, acc, s, vb)

  (m, denom, acc), cache = loop_over_blocks(-(-start // block), body, (m, denom, acc), cache_k, cache_v, thread_cache)
  return ungroup_query_heads(acc / denom[..., None], c).astype(q.dtype), cache
