"""Decode attention over a slot cache: one new query per slot, keys read block by block.

Each slot's keys are positions [0, lengths[b]) of the cache plus the new token itself. The cache is
read in blocks of `block` positions, only as many blocks as the longest live slot needs (a dynamic
trip count, so one compiled step serves every length), never the whole allocated length. The
softmax is accumulated online as in flash decoding, starting from the new token's own score, which
is always visible: a block a slot does not reach contributes exp(-inf) = 0 and rescales by
exp(0) = 1, so its result is bit for bit the same whether its neighbours are long or short.

Shapes: q [B, N, H]; k_new, v_new [B, K, H]; cache_k, cache_v [L, B, K, S, H] (S a multiple of
`block`), or with `keys_transposed` cache_k [L, B, K, H, S] (models/decode/slot_cache.py says why); lengths
[B]. G = N / K query heads share a kv head.

Every attention takes the cache as a `CacheRead` (the arrays, the layer, the block length). With
`thread`, the cache goes through the block loop as a carried value and comes back out,
for a caller that chains it from layer to layer (unrolled layers; see `loop_over_blocks`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CacheRead:
  """How an attention call reads one layer of a slot cache (the arguments every decode attention
  and the chunked prefill's attention share)."""

  k: jax.Array  # [L, B, K, S, H], or [L, B, K, H, S] with keys_transposed
  v: jax.Array  # [L, B, K, S, H]
  layer: jax.Array | int
  block: int  # cache positions read at a time
  thread: bool = False  # carry the cache through the block loop (`loop_over_blocks`)
  keys_transposed: bool = False

  def unpack(self):
    return self.k, self.v, self.layer, self.block, self.thread, self.keys_transposed


def num_blocks(lengths: jax.Array, active: jax.Array, block: int) -> jax.Array:
  """Blocks of cache to read: enough for the longest active slot ([] int32)."""
  longest = jnp.max(jnp.where(active, lengths, 0))
  return (longest + block - 1) // block


def loop_over_blocks(count, body, init, cache_k: jax.Array, cache_v: jax.Array, thread_cache: bool):
  """`fori_loop(0, count)` of `body(i, carry, cache_k, cache_v) -> carry`, which reads the cache
  -> (carry, (cache_k, cache_v)).

  Why thread the cache: each loop takes the arrays it reads as operands. Unrolled layers would pass
  one cache buffer to 30 loops and then to the step's in-place append, and XLA:CPU keeps the value
  alive by copying the whole cache at every step (8 ms of a 37 ms batch-1 step of SmolLM2 at 1024
  positions, growing with the cache). Carried through each loop and chained from layer to layer, the
  cache is one sequence of in-place uses. The optimization barrier stops XLA from seeing that the
  loop passes it through unchanged and hoisting it back out as a shared operand. Inside a scan over
  layers the cache is the scan's own operand and needs no threading (`thread_cache=False`).
  """
  if not thread_cache:
    carry = jax.lax.fori_loop(0, count, lambda i, c: body(i, c, cache_k, cache_v), init)
    return carry, (cache_k, cache_v)

  def threaded(i, state):
    carry, (ck, cv) = state
    return body(i, carry, ck, cv), jax.lax.optimization_barrier((ck, cv))

  return jax.lax.fori_loop(0, count, threaded, (init, (cache_k, cache_v)))


def online_softmax_update(m, denom, acc, s, v):
  """Folds one block of scores s [B, K, Q, S] (fp32) and its values v [B, K, S, H] into the
  running max m and denominator [B, K, Q] and the unnormalised output acc [B, K, Q, H]."""
  m_new = jnp.maximum(m, jnp.max(s, axis=-1))
  scale = jnp.exp(m - m_new)
  p = jnp.exp(s - m_new[..., None])
  denom = denom * scale + jnp.sum(p, axis=-1)
  acc = acc * scale[..., None] + jnp.einsum("BKQS,BKSH->BKQH", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return m_new, denom, acc


def key_block(cache_k: jax.Array, layer, slot, start, slots: int, block: int, keys_transposed: bool) -> jax.Array:
  """Keys of `slots` slots from `slot` at positions [start, start + block) of `layer`: [slots, K,
  block, H], or [slots, K, H, block] as stored transposed."""
  _, _, kv_heads, a, b = cache_k.shape
  if keys_transposed:
    return jax.lax.dynamic_slice(cache_k, (layer, slot, 0, 0, start), (1, slots, kv_heads, a, block))[0]
  return jax.lax.dynamic_slice(cache_k, (layer, slot, 0, start, 0), (1, slots, kv_heads, block, b))[0]


def value_block(cache_v: jax.Array, layer, slot, start, slots: int, block: int) -> jax.Array:
  """Values of `slots` slots from `slot` at positions [start, start + block) of `layer`: [slots, K,
  block, H]."""
  _, _, kv_heads, _, h = cache_v.shape
  return jax.lax.dynamic_slice(cache_v, (layer, slot, 0, start, 0), (1, slots, kv_heads, block, h))[0]


def block_scores(qg: jax.Array, keys: jax.Array, keys_transposed: bool) -> jax.Array:
  """qg [I, K, Q, H] against a `key_block` [I, K, S, H] (or [I, K, H, S]) -> fp32 [I, K, Q, S]."""
  pattern = "IKQH,IKHS->IKQS" if keys_transposed else "IKQH,IKSH->IKQS"
  return jnp.einsum(pattern, qg, keys.astype(qg.dtype), preferred_element_type=jnp.float32)


def grouped_queries(q: jax.Array, kv_heads: int, cache_v: jax.Array, block: int) -> jax.Array:
  """q [B, N, H] scaled by 1 / sqrt(H) and grouped by kv head -> [B, K, G, H]; checks that the
  cache splits into whole blocks."""
  b, n, h = q.shape
  if cache_v.shape[3] % block:
    raise ValueError(f"cache length {cache_v.shape[3]} is not a multiple of the block {block}")
  scaled = q.astype(jnp.float32) * (1.0 / math.sqrt(h))
  return scaled.reshape(b, kv_heads, n // kv_heads, h).astype(q.dtype)


def _own_token_state(qg: jax.Array, k_new: jax.Array, v_new: jax.Array):
  """The online softmax's start from the new token's own score, which every row sees (so the
  running max is finite): max [B, K, G], denominator 1, values v_new [B, K, G, H] (fp32)."""
  m = jnp.einsum("BKGH,BKH->BKG", qg, k_new, preferred_element_type=jnp.float32)
  values = jnp.broadcast_to(v_new.astype(jnp.float32)[:, :, None, :], (*m.shape, qg.shape[-1]))
  return m, jnp.ones_like(m), values


def ragged_decode_attention(
  q: jax.Array,
  k_new: jax.Array,
  v_new: jax.Array,
  read: CacheRead,
  lengths: jax.Array,
  blocks: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """softmax over (cache keys < length, new key) of q k / sqrt(H), times v -> [B, N, H], and the
  cache (carried through the loop with `read.thread`, else the arrays given)."""
  cache_k, cache_v, layer, block, thread_cache, keys_transposed = read.unpack()
  b, n, h = q.shape
  kv_heads = k_new.shape[1]
  qg = grouped_queries(q, kv_heads, cache_v, block)
  m, denom, acc = _own_token_state(qg, k_new, v_new)

  def body(i, carry, cache_k, cache_v):
    m, denom, acc = carry
    start = i * block
    kb = key_block(cache_k, layer, 0, start, b, block, keys_transposed)
    vb = value_block(cache_v, layer, 0, start, b, block).astype(q.dtype)
    s = block_scores(qg, kb, keys_transposed)  # [B, K, G, block]
    visible = (start + jnp.arange(block))[None, :] < lengths[:, None]  # [B, block]
    s = jnp.where(visible[:, None, None, :], s, -jnp.inf)
    return online_softmax_update(m, denom, acc, s, vb)

  (m, denom, acc), cache = loop_over_blocks(blocks, body, (m, denom, acc), cache_k, cache_v, thread_cache)
  return (acc / denom[..., None]).reshape(b, n, h).astype(q.dtype), cache


def per_slot_decode_attention(
  q: jax.Array,
  k_new: jax.Array,
  v_new: jax.Array,
  read: CacheRead,
  lengths: jax.Array,
  active: jax.Array,
  group: int = 8,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """`ragged_decode_attention` with each active slot reading only its own blocks.

  The block loop above reads every slot up to the longest one; in the search the slots of one step
  hold short drafts beside long edit prompts, and half of what it reads is masked. Here the blocks
  the active slots reach form a work list of (slot, block) pairs, slot by slot; each loop step
  takes the next `group` pairs (a gather of one slot's block each), scores them and keeps each
  pair's partial softmax (its max, denominator and weighted values) at [slot, block]. The
  partials are then folded slot by slot, from the new token's own score through the blocks in
  order: a block a slot does not reach holds max -inf and folds in exactly nothing, so a slot's
  result depends only on its own blocks, not on its neighbours or where its pairs fell in a group.
  On a 2-core CPU (SmolLM2 shapes, 16 slots at 200-800 positions, 30 layers) attention took 57-69
  ms against 70-85 for the block loop. Smaller groups make more, lighter loop steps: a whole
  16-slot decode step at 150-750 positions took 122-130 ms with groups of 8 against 132-141 with
  16 and 169 with 32 (8 slots: 85 against 94), the same logits bit for bit. It gathers across
  slots, so it is for an unsharded cache.
  """
  _, cache_v, _, block, _, _ = read.unpack()
  b, n, h = q.shape
  kv_heads = k_new.shape[1]
  qg = grouped_queries(q, kv_heads, cache_v, block)
  partial = empty_partials(b, cache_v.shape[3] // block, kv_heads, n // kv_heads, h)
  partial, cache = own_block_partials(qg, read, lengths, jnp.zeros_like(lengths), active, group, partial)
  blocks = jnp.max(jnp.where(active, (lengths + block - 1) // block, 0))
  return fold_partials(qg, k_new, v_new, partial, blocks).reshape(b, n, h).astype(q.dtype), cache


Partials = tuple[jax.Array, jax.Array, jax.Array]  # max, denominator [B, J, K, G]; values [B, J, K, G, H]


def empty_partials(slots: int, blocks: int, kv_heads: int, g: int, h: int) -> Partials:
  """Per (slot, block) partial softmax, all empty (max -inf: folds in nothing)."""
  f32 = jnp.float32
  return (
    jnp.full((slots, blocks, kv_heads, g), -jnp.inf, f32),
    jnp.zeros((slots, blocks, kv_heads, g), f32),
    jnp.zeros((slots, blocks, kv_heads, g, h), f32),
  )


def block_partial(qg: jax.Array, kb: jax.Array, vb: jax.Array, visible: jax.Array, keys_transposed: bool):
  """One block's partial softmax for I rows: qg [I, K, G, H] against keys kb and values vb [I, K,
  block, H] (keys as `key_block` gives them) where `visible` [I, block] -> max, denominator
  [I, K, G] and weighted values [I, K, G, H] (fp32)."""
  s = block_scores(qg, kb, keys_transposed)
  s = jnp.where(visible[:, None, None, :], s, -jnp.inf)
  m = jnp.max(s, axis=-1)  # finite: a pair's block holds at least one of its slot's positions
  p = jnp.exp(s - m[..., None])
  d = jnp.sum(p, axis=-1)
  a = jnp.einsum("IKGS,IKSH->IKGH", p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
  return m, d, a


def own_block_partials(
  qg: jax.Array, read: CacheRead, lengths: jax.Array, base: jax.Array, active: jax.Array, group: int, partial: Partials
) -> tuple[Partials, tuple[jax.Array, jax.Array]]:
  """`partial` with each active slot's blocks of its own cache row: slot b holds positions
  [base[b], lengths[b]) from its row's position 0 (base a multiple of the block: 0 unless a prefix
  table holds the positions before it), whose partials go to blocks base[b] / block on. The work
  list, slot by slot, of (slot, block) pairs is taken `group` pairs per loop step."""
  cache_k, cache_v, layer, block, thread_cache, keys_transposed = read.unpack()
  b = qg.shape[0]
  own = lengths - base
  reach = jnp.where(active, (own + block - 1) // block, 0)  # [B] blocks each slot reads
  ends = jnp.cumsum(reach)  # the work list: slot b's pairs are [ends[b] - reach[b], ends[b])
  total = ends[-1]
  first = base // block

  def body(i, partial, cache_k, cache_v):
    item = i * group + jnp.arange(group)
    valid = item < total
    slot = jnp.minimum(jnp.searchsorted(ends, item, side="right"), b - 1)
    j = jnp.where(valid, item - (ends[slot] - reach[slot]), 0)  # the block within the slot's row

    keys = lambda s, jj: key_block(cache_k, layer, s, jj * block, 1, block, keys_transposed)[0]
    kb = jax.vmap(keys)(slot, j)  # [group, K, block, H] or [group, K, H, block]
    values = lambda s, jj: value_block(cache_v, layer, s, jj * block, 1, block)[0]
    vb = jax.vmap(values)(slot, j).astype(qg.dtype)  # [group, K, block, H]
    visible = (j[:, None] * block + jnp.arange(block)[None, :]) < own[slot][:, None]  # [group, block]
    row = jnp.where(valid, slot, b)  # pairs past the list's end are dropped
    at = first[slot] + j
    pieces = block_partial(qg[slot], kb, vb, visible, keys_transposed)
    return tuple(x.at[row, at].set(y, mode="drop") for x, y in zip(partial, pieces))

  return loop_over_blocks((total + group - 1) // group, body, partial, cache_k, cache_v, thread_cache)


def fold_partials(qg: jax.Array, k_new: jax.Array, v_new: jax.Array, partial: Partials, blocks: jax.Array) -> jax.Array:
  """The attention [B, K, G, H] (fp32) from the new token's own score through `blocks` per-block
  partials in block order: a block a slot does not reach holds max -inf and folds in nothing, so
  a slot's result depends only on its own blocks."""
  m_part, d_part, a_part = partial

  def fold(jj, carry):
    m, denom, acc = carry
    m_j, d_j, a_j = m_part[:, jj], d_part[:, jj], a_part[:, jj]
    m_new = jnp.maximum(m, m_j)
    old, new = jnp.exp(m - m_new), jnp.exp(m_j - m_new)
    return m_new, denom * old + d_j * new, acc * old[..., None] + a_j * new[..., None]

  _, denom, acc = jax.lax.fori_loop(0, blocks, fold, _own_token_state(qg, k_new, v_new))
  return acc / denom[..., None]
