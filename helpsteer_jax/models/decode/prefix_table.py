"""Shared prompt prefixes of a slot cache, held once: the prefix table.

In the search many slots decode after one long shared prefix: the 2M feedback samples of a draft
and the edits of a draft all begin with the conversation and that draft (formats/plain.py), and
the n samples of a request share its whole prompt. A slot cache of one sample per slot
(models/decode/slot_cache.py) holds a copy of the prefix in every such slot, and each decode step
reads every copy. With a prefix table the prefix's keys and values are held once, in one of P
entries, and the slots that share it hold only what follows it.

Slot b reads entry `of_slot[b]` (-1: none) for its positions [0, base[b]), base[b] =
`lengths[of_slot[b]]`, and its own cache row for positions [base[b], lengths[b]), stored from the
row's position 0. A prefix length is a multiple of the attention block, so a slot's blocks are the
same blocks with or without the table and its attention is computed from the same per-block pieces
in the same order (models/decode/prefix_attention.py): the tokens do not change.

Shapes: k [L, P, K, Sp, H] (or [L, P, K, H, Sp] with the slot cache's `keys_transposed`); v
[L, P, K, Sp, H]; lengths [P]; of_slot [B].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from helpsteer_jax.models.config import LlamaConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PrefixTable:
  k: jax.Array  # [L, P, K, Sp, H], or [L, P, K, H, Sp] with keys_transposed
  v: jax.Array  # [L, P, K, Sp, H]
  lengths: jax.Array  # [P] int32: positions each entry holds (a multiple of the attention block)
  of_slot: jax.Array  # [B] int32: the entry slot b reads its first positions from, -1 for none

  @property
  def num_entries(self) -> int:
    return self.v.shape[1]

  @property
  def max_length(self) -> int:
    return self.v.shape[3]

  @classmethod
  def init(
    cls, config: LlamaConfig, entries: int, max_length: int, num_slots: int, dtype, keys_transposed: bool
  ) -> "PrefixTable":
    shape = (config.num_layers, entries, config.num_kv_heads, max_length, config.head_dim)
    key_shape = (*shape[:3], shape[4], shape[3]) if keys_transposed else shape
    return cls(
      k=jnp.zeros(key_shape, dtype),
      v=jnp.zeros(shape, dtype),
      lengths=jnp.zeros((entries,), jnp.int32),
      of_slot=jnp.full((num_slots,), -1, jnp.int32),
    )

  def base(self) -> jax.Array:
    """[B] int32: positions each slot reads from the table (0 for a slot with no entry)."""
    entry = jnp.clip(self.of_slot, 0, self.num_entries - 1)
    return jnp.where(self.of_slot >= 0, self.lengths[entry], 0)

  def write(self, k: jax.Array, v: jax.Array, entry: jax.Array, start: jax.Array, keys_transposed: bool):
    """Writes a prompt chunk's keys and values k, v [L, 1, K, T, H] into entry `entry` at positions
    [start, start + T); lengths are unchanged."""
    new_k, new_v = write_positions(self.k, self.v, k, v, entry, start, keys_transposed)
    return dataclasses.replace(self, k=new_k, v=new_v)

  def assign(self, slot: jax.Array, entry: jax.Array, length: jax.Array) -> "PrefixTable":
    """Slot `slot` reads entry `entry` (-1: none), which holds `length` positions."""
    lengths = jnp.where(entry >= 0, self.lengths.at[jnp.maximum(entry, 0)].set(length), self.lengths)
    return dataclasses.replace(self, lengths=lengths, of_slot=self.of_slot.at[slot].set(entry))

  def grow(self, max_length: int, keys_transposed: bool) -> "PrefixTable":
    """The same table with room for `max_length` positions per entry (new positions zero)."""
    k, v = pad_positions(self.k, self.v, max_length, keys_transposed)
    return dataclasses.replace(self, k=k, v=v)


def pad_positions(
  cache_k: jax.Array, cache_v: jax.Array, max_length: int, keys_transposed: bool
) -> tuple[jax.Array, jax.Array]:
  """cache_k, cache_v [L, R, K, S, H] (keys [L, R, K, H, S] when transposed) padded with zeros to
  `max_length` positions per row."""
  pad = [(0, 0)] * 5
  pad[3] = (0, max_length - cache_v.shape[3])
  key_pad = [pad[0], pad[1], pad[2], pad[4], pad[3]] if keys_transposed else pad
  return jnp.pad(cache_k, key_pad), jnp.pad(cache_v, pad)


def write_positions(
  cache_k: jax.Array,
  cache_v: jax.Array,
  k: jax.Array,
  v: jax.Array,
  row: jax.Array,
  start: jax.Array,
  keys_transposed: bool,
) -> tuple[jax.Array, jax.Array]:
  """cache_k, cache_v [L, R, K, S, H] (keys [L, R, K, H, S] when transposed) with k, v
  [L, 1, K, T, H] written into row `row` at positions [start, start + T)."""
  at = (0, row, 0, start, 0)
  if keys_transposed:
    by_head = k.swapaxes(3, 4).astype(cache_k.dtype)  # [L, 1, K, H, T]
    new_k = jax.lax.dynamic_update_slice(cache_k, by_head, (0, row, 0, 0, start))
  else:
    new_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), at)
  return new_k, jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), at)
