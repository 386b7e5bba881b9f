"""Decode attention over a slot cache by the Pallas paged-attention kernel for TPU.

JAX ships `jax.experimental.pallas.ops.tpu.paged_attention`: one query per sequence over keys held
in pages, [kv_heads, pages, page_size, H], each sequence naming its pages and its length; the kernel
fetches only the pages a sequence's length reaches (a ragged read) and streams them through VMEM.

The slot cache needs no new layout for it (keys stored by position, which is what
`Llama.slot_keys_transposed` picks when this kernel runs). Its keys, [L, B, K, S, H] in one array,
are read as L x B x K sequences of S / page_size pages each, a reshape that moves no data:
    pages [1, L*B*K*S/ps, ps, H];  sequence (l, b, k) = pages ((l*B + b)*K + k) * S/ps + [0, S/ps).
The kernel then sees one kv head per sequence and the G query heads that share it as its group:
q [B, N, H] -> [B*K, G, H], a reshape too.

The kernel reads only the cache, so each layer writes its new token's key and value (at the slot's
length) before attending, and the layer loop carries the cache (in place) instead of appending all
layers' tokens after it as the XLA path does (models/decode/decode_attention.py).

Precision: the kernel's dots run at the TPU's default matmul precision (bf16 passes); on an fp32
cache it differs from the XLA path by ~1e-2, so `auto` picks it only for 16-bit caches.
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "per_slot", "paged")


def resolve(impl: str, cache_dtype, backend: str | None = None) -> str:
  """The decode attention `impl` runs as: "paged" (the TPU kernel), "per_slot" (XLA, each slot
  reading only its own blocks: models/decode/decode_attention.py, the default on CPU) or "xla" (XLA, every
  slot read up to the longest). `Llama.decode_slots` falls back from per_slot to xla for a single
  slot or a sharded cache."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"decode_attention_impl={impl!r}; expected one of {IMPLEMENTATIONS}")
  backend = backend or jax.default_backend()
  if impl in ("xla", "per_slot"):
    return impl
  if backend != "tpu":
    if impl == "paged":
      logging.warning("decode_attention_impl='paged' is a TPU kernel; backend %r decodes with XLA", backend)
      return "xla"
    return "per_slot" if backend == "cpu" else "xla"  # other backends: not measured here
  if impl == "auto" and jnp.dtype(cache_dtype).itemsize > 2:
    return "xla"  # fp32: keep the exact path (see Precision above)
  return "paged"


def page_size(max_length: int, block: int) -> int:
  """Positions per page: the attention block when it divides the cache, else the largest power of
  two that does (the slot cache's length is a multiple of the block)."""
  if max_length % block == 0:
    return block
  size = 1
  while max_length % (size * 2) == 0 and size * 2 <= block:
    size *= 2
  return size


def paged_decode_attention(
  q: jax.Array,  # [B, N, H]
  k_new: jax.Array,  # [B, K, H]
  v_new: jax.Array,  # [B, K, H]
  cache_k: jax.Array,  # [L, B, K, S, H]
  cache_v: jax.Array,  # [L, B, K, S, H]
  layer: jax.Array | int,
  lengths: jax.Array,  # [B] int32: cached tokens per slot
  active: jax.Array,  # [B] bool: slots that decode (the others write nothing)
  block: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """softmax over (cache keys < length, new key) of q k / sqrt(H), times v -> [B, N, H], and the
  cache with the active slots' new keys and values written at their lengths."""
  from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention

  num_layers, b, kv_heads, s, h = cache_k.shape
  n = q.shape[1]
  g = n // kv_heads
  rows = jnp.arange(b)
  at = jnp.where(active, lengths, s)  # out of range: dropped for inactive slots
  cache_k = cache_k.at[layer, rows, :, at, :].set(k_new.astype(cache_k.dtype), mode="drop")
  cache_v = cache_v.at[layer, rows, :, at, :].set(v_new.astype(cache_v.dtype), mode="drop")
  ps = page_size(s, block)
  per_sequence = s // ps
  k_pages = cache_k.reshape(1, num_layers * b * kv_heads * per_sequence, ps, h)
  v_pages = cache_v.reshape(1, num_layers * b * kv_heads * per_sequence, ps, h)
  sequence = (layer * b + rows[:, None]) * kv_heads + jnp.arange(kv_heads)[None, :]  # [B, K]
  pages = sequence.reshape(-1, 1) * per_sequence + jnp.arange(per_sequence)[None, :]
  # Every sequence sees its new token: an inactive slot's row reads its own last key (discarded).
  seen = jnp.repeat(jnp.where(active, lengths + 1, jnp.maximum(lengths, 1)), kv_heads).astype(jnp.int32)
  qg = (q.astype(jnp.float32) * (1.0 / math.sqrt(h))).astype(cache_k.dtype).reshape(b * kv_heads, g, h)
  per_block = math.gcd(per_sequence, max(1, block // ps))
  out = paged_attention(qg, k_pages, v_pages, seen, pages.astype(jnp.int32), pages_per_compute_block=per_block)
  return out.reshape(b, n, h).astype(q.dtype), cache_k, cache_v
