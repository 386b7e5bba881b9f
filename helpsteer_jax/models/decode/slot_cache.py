"""The key/value cache of a decode engine: a fixed number of slots, each with its own length.

A cache of one sample per slot: unlike a static batch (rows left-padded to one shared write index), every slot here holds one
sequence from position 0 with no padding: slot b's tokens fill positions [0, lengths[b]), its next
token is written at `lengths[b]` and is rotated to RoPE position `lengths[b]`. Rows therefore never
wait for each other: a finished row is refilled with a new prompt while the others keep decoding.

Keys are stored [L, B, K, S, H] or, with `keys_transposed`, [L, B, K, H, S] (values always
[L, B, K, S, H]). With a prefix table (models/decode/prefix_table.py), slot b's first base[b]
positions are read from the table and its row holds positions [base[b], lengths[b]) from the
row's position 0. Why transpose: a decode step's scores are q [G, H] against a block of keys; on
XLA:CPU the product with keys [S, H] packs (transposes) each block before multiplying, and with
keys [H, S] it reads them as they lie, as the values' product does. Measured on a 2-core AMD EPYC
(SmolLM2's 30 layers, 16 slots at 200-800 positions, per-slot attention): the scores' products took
6.5 ms a step against 24 ms, the same results bit for bit. The TPU paged kernel reads keys
[S, H] pages, so only XLA paths read transposed keys (see `Llama.slot_keys_transposed`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.decode.prefix_table import PrefixTable, pad_positions, write_positions


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlotCache:
  k: jax.Array  # [L, B, K, S, H], or [L, B, K, H, S] with keys_transposed
  v: jax.Array  # [L, B, K, S, H]
  lengths: jax.Array  # [B] int32: tokens held by each slot (= the RoPE position of its next token)
  keys_transposed: bool = dataclasses.field(default=False, metadata=dict(static=True))
  prefix: PrefixTable | None = None  # shared prefixes held once (None: every row holds its own)

  @property
  def max_length(self) -> int:
    """Positions a slot's row holds (after its prefix, with a prefix table)."""
    return self.v.shape[3]

  def base(self) -> jax.Array:
    """[B] int32: each slot's positions held by the prefix table (its row starts there)."""
    return jnp.zeros_like(self.lengths) if self.prefix is None else self.prefix.base()

  @property
  def num_slots(self) -> int:
    return self.k.shape[1]

  @classmethod
  def init(
    cls,
    config: LlamaConfig,
    num_slots: int,
    max_length: int,
    dtype=None,
    keys_transposed: bool = False,
    prefix_entries: int = 0,
    prefix_length: int = 0,
  ) -> "SlotCache":
    """An empty cache; with `prefix_entries`, a prefix table of that many entries of
    `prefix_length` positions each."""
    dtype = config.compute_dtype if dtype is None else dtype
    shape = (config.num_layers, num_slots, config.num_kv_heads, max_length, config.head_dim)
    key_shape = (*shape[:3], shape[4], shape[3]) if keys_transposed else shape
    prefix = None
    if prefix_entries:
      prefix = PrefixTable.init(config, prefix_entries, prefix_length, num_slots, dtype, keys_transposed)
    return cls(
      k=jnp.zeros(key_shape, dtype),
      v=jnp.zeros(shape, dtype),
      lengths=jnp.zeros((num_slots,), jnp.int32),
      keys_transposed=keys_transposed,
      prefix=prefix,
    )

  def replace(self, **changes) -> "SlotCache":
    return dataclasses.replace(self, **changes)

  def append(self, k: jax.Array, v: jax.Array, active: jax.Array) -> "SlotCache":
    """Writes one new token per slot (k, v [L, B, K, H]) at its own length; inactive slots
    ([B] bool False) write nothing and keep their length."""
    rows = jnp.arange(self.num_slots)
    # An out-of-range index with mode="drop" skips the write for an inactive slot.
    at = jnp.where(active, self.lengths - self.base(), self.max_length)
    # Advanced indices on axes 1 and 3 move to the front: the update is laid out [B, L, K, H].
    key_at = (
      (slice(None), rows, slice(None), slice(None), at)
      if self.keys_transposed
      else (slice(None), rows, slice(None), at, slice(None))
    )
    new_k = self.k.at[key_at].set(k.transpose(1, 0, 2, 3).astype(self.k.dtype), mode="drop")
    new_v = self.v.at[:, rows, :, at, :].set(v.transpose(1, 0, 2, 3).astype(self.v.dtype), mode="drop")
    return self.replace(k=new_k, v=new_v, lengths=self.lengths + active.astype(jnp.int32))

  def write(self, k: jax.Array, v: jax.Array, slot: jax.Array, start: jax.Array) -> "SlotCache":
    """Writes a prompt chunk's keys and values k, v [L, 1, K, T, H] into slot `slot` at positions
    [start, start + T); lengths are unchanged."""
    new_k, new_v = write_positions(self.k, self.v, k, v, slot, start, self.keys_transposed)
    return self.replace(k=new_k, v=new_v)

  def grow(self, max_length: int) -> "SlotCache":
    """The same cache with room for `max_length` positions per row (new positions zero; the prefix
    table as it is)."""
    k, v = pad_positions(self.k, self.v, max_length, self.keys_transposed)
    return self.replace(k=k, v=v)

  def keys_by_position(self) -> jax.Array:
    """The keys laid out [L, B, K, S, H] whichever way they are stored."""
    return self.k.swapaxes(3, 4) if self.keys_transposed else self.k
