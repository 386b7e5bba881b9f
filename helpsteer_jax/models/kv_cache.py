"""The key/value cache: a plain pytree carried through prefill and decode.

Prompts of a batch are left-padded to a shared length, so every row writes its next token into the
same slot (`index`) and a step is one `dynamic_update_slice`. `valid` marks the slots that hold real
tokens, and `next_position` the RoPE position each row continues from, so padding never shifts
positions or receives attention.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.parallel import axes as ax

# Heads before positions: attention then contracts over plain batched matmuls (see layers.py).
CACHE_AXES = (ax.CACHE_LAYERS, ax.CACHE_BATCH, ax.CACHE_KV_HEADS, ax.CACHE_SEQ, ax.CACHE_HEAD_DIM)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  k: jax.Array  # [L, B, K, S, H]
  v: jax.Array  # [L, B, K, S, H]
  valid: jax.Array  # [B, S] bool: slot holds a real token
  next_position: jax.Array  # [B] int32: RoPE position of the row's next token
  index: jax.Array  # [] int32: next slot to write, shared by all rows

  @property
  def max_length(self) -> int:
    return self.k.shape[3]

  @property
  def batch_size(self) -> int:
    return self.k.shape[1]

  @classmethod
  def init(cls, config: LlamaConfig, batch_size: int, max_length: int, dtype=None) -> "KVCache":
    dtype = config.compute_dtype if dtype is None else dtype
    shape = (config.num_layers, batch_size, config.num_kv_heads, max_length, config.head_dim)
    return cls(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        valid=jnp.zeros((batch_size, max_length), bool),
        next_position=jnp.zeros((batch_size,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )

  def replace(self, **changes) -> "KVCache":
    return dataclasses.replace(self, **changes)

  def repeat(self, n: int) -> "KVCache":
    """Each row repeated n times (rows b*n .. b*n+n-1 copy row b): n samples share one prefill."""
    rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
    return self.replace(
        k=rep(self.k, 1), v=rep(self.v, 1), valid=rep(self.valid, 0),
        next_position=rep(self.next_position, 0),
    )
