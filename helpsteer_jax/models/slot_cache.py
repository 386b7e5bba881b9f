"""The key/value cache of a decode engine: a fixed number of slots, each with its own length.

Unlike `KVCache`, whose rows are left-padded to one shared write index, every slot here holds one
sequence from position 0 with no padding: slot b's tokens fill positions [0, lengths[b]), its next
token is written at `lengths[b]` and is rotated to RoPE position `lengths[b]`. Rows therefore never
wait for each other: a finished row is refilled with a new prompt while the others keep decoding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from helpsteer_jax.models.config import LlamaConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlotCache:
  k: jax.Array  # [L, B, K, S, H]
  v: jax.Array  # [L, B, K, S, H]
  lengths: jax.Array  # [B] int32: tokens held by each slot (= the RoPE position of its next token)

  @property
  def max_length(self) -> int:
    return self.k.shape[3]

  @property
  def num_slots(self) -> int:
    return self.k.shape[1]

  @classmethod
  def init(cls, config: LlamaConfig, num_slots: int, max_length: int, dtype=None) -> "SlotCache":
    dtype = config.compute_dtype if dtype is None else dtype
    shape = (config.num_layers, num_slots, config.num_kv_heads, max_length, config.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               lengths=jnp.zeros((num_slots,), jnp.int32))

  def replace(self, **changes) -> "SlotCache":
    return dataclasses.replace(self, **changes)

  def append(self, k: jax.Array, v: jax.Array, active: jax.Array) -> "SlotCache":
    """Writes one new token per slot (k, v [L, B, K, H]) at its own length; inactive slots
    ([B] bool False) write nothing and keep their length."""
    rows = jnp.arange(self.num_slots)
    # An out-of-range index with mode="drop" skips the write for an inactive slot.
    at = jnp.where(active, self.lengths, self.max_length)
    # Advanced indices on axes 1 and 3 move to the front: the update is laid out [B, L, K, H].
    new_k = self.k.at[:, rows, :, at, :].set(k.transpose(1, 0, 2, 3).astype(self.k.dtype), mode="drop")
    new_v = self.v.at[:, rows, :, at, :].set(v.transpose(1, 0, 2, 3).astype(self.v.dtype), mode="drop")
    return self.replace(k=new_k, v=new_v, lengths=self.lengths + active.astype(jnp.int32))
