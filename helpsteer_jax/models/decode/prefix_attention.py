"""Decode attention with shared prefixes read once: cascade attention over a prefix table.

Slots that share a prompt prefix (the 2M feedback samples of a draft, the edits of a draft) read
it from one entry of the prefix table (models/decode/prefix_table.py) and the rest of their
positions from their own cache rows. The per-slot attention (models/decode/decode_attention.py)
reads every slot's blocks separately: a prefix shared by m slots is read m times a step. Here the
prefix blocks form a second work list, of (entry, block, group of up to `group` slots reading the
entry) items: each item reads one block of the entry once and scores it against the queries of
its slots, so a prefix is read once per `group` slots that share it instead of once per slot.

Each (slot, block) pair's partial softmax is computed by the same function whether the block comes
from the table or from the slot's row, and the partials are folded in block order from the new
token's own score, exactly as the per-slot attention folds them: with the same keys and values in
the table as in the rows, a slot's attention is the same bit for bit (tested in
tests/models/decode/test_prefix_attention.py).

Shapes: q [B, N, H]; k_new, v_new [B, K, H]; the slot cache rows as `CacheRead` (own positions
from 0); the table's k, v [L, P, K, Sp, H] (keys [L, P, K, H, Sp] when the cache's are transposed);
lengths [B] (every position a slot holds, table and row together: its RoPE position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from helpsteer_jax.models.decode.decode_attention import (
  CacheRead,
  Partials,
  block_partial,
  empty_partials,
  fold_partials,
  grouped_queries,
  key_block,
  loop_over_blocks,
  own_block_partials,
  value_block,
)


def prefix_block_partials(
  qg: jax.Array,
  read: CacheRead,
  prefix_lengths: jax.Array,
  of_slot: jax.Array,
  active: jax.Array,
  group: int,
  partial: Partials,
) -> tuple[Partials, tuple[jax.Array, jax.Array]]:
  """`partial` with the table's blocks for every active slot that reads an entry (`read` holds the
  table: k, v [L, P, K, Sp, H]). Items are (entry, block, group of slots), entry by entry; an
  entry's slots are taken in slot order, `group` at a time."""
  table_k, table_v, layer, block, thread_cache, keys_transposed = read.unpack()
  b = qg.shape[0]
  entries = prefix_lengths.shape[0]
  reads = active & (of_slot >= 0)
  entry_of = jnp.where(reads, of_slot, entries)  # slots with no entry sort last
  order = jnp.argsort(entry_of, stable=True)  # slots grouped by entry, in slot order within one
  count = jnp.sum(entry_of[None, :] == jnp.arange(entries)[:, None], axis=1)  # [P] slots per entry
  first = jnp.cumsum(count) - count  # an entry's slots are order[first[p]:first[p] + count[p]]
  groups = (count + group - 1) // group
  items = groups * (prefix_lengths // block)  # [P]
  ends = jnp.cumsum(items)
  total = ends[-1]

  def body(i, partial, table_k, table_v):
    valid = i < total
    entry = jnp.minimum(jnp.searchsorted(ends, i, side="right"), entries - 1)
    within = i - (ends[entry] - items[entry])
    per_block = jnp.maximum(groups[entry], 1)
    j, g = within // per_block, within % per_block  # the entry's block, the group of its slots
    member = g * group + jnp.arange(group)
    slot = order[jnp.clip(first[entry] + member, 0, b - 1)]
    keep = valid & (member < count[entry])
    kb = key_block(table_k, layer, entry, j * block, 1, block, keys_transposed)  # read once for the group
    vb = value_block(table_v, layer, entry, j * block, 1, block).astype(qg.dtype)
    kb = jnp.broadcast_to(kb, (group, *kb.shape[1:]))
    vb = jnp.broadcast_to(vb, (group, *vb.shape[1:]))
    visible = jnp.ones((group, block), bool)  # an entry's length is whole blocks
    row = jnp.where(keep, slot, b)  # members past the entry's slots are dropped
    pieces = block_partial(qg[slot], kb, vb, visible, keys_transposed)
    return tuple(x.at[row, j].set(y, mode="drop") for x, y in zip(partial, pieces))

  return loop_over_blocks(total, body, partial, table_k, table_v, thread_cache)


def shared_prefix_decode_attention(
  q: jax.Array,
  k_new: jax.Array,
  v_new: jax.Array,
  read: CacheRead,
  table: CacheRead,
  prefix_lengths: jax.Array,
  of_slot: jax.Array,
  lengths: jax.Array,
  active: jax.Array,
  group: int = 8,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
  """softmax over (table keys < base, own keys < lengths - base, new key) of q k / sqrt(H), times
  v -> [B, N, H], the rows' cache and the table's (each carried through its loop with `thread`).
  base[b] = prefix_lengths[of_slot[b]] (0 where of_slot is -1)."""
  _, cache_v, _, block, _, _ = read.unpack()
  b, n, h = q.shape
  kv_heads = k_new.shape[1]
  qg = grouped_queries(q, kv_heads, cache_v, block)
  entry = jnp.clip(of_slot, 0, prefix_lengths.shape[0] - 1)
  base = jnp.where(of_slot >= 0, prefix_lengths[entry], 0)
  blocks = (table.v.shape[3] + cache_v.shape[3]) // block
  partial = empty_partials(b, blocks, kv_heads, n // kv_heads, h)
  partial, table_kv = prefix_block_partials(qg, table, prefix_lengths, of_slot, active, group, partial)
  partial, cache = own_block_partials(qg, read, lengths, base, active, group, partial)
  reach = jnp.max(jnp.where(active, (lengths + block - 1) // block, 0))
  return fold_partials(qg, k_new, v_new, partial, reach).reshape(b, n, h).astype(q.dtype), cache, table_kv
