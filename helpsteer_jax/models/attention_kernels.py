"""Accelerator attention kernels for full sequences (training, prefill), chosen by config.

`attention_impl` (LlamaConfig) is one of:
  auto    the best kernel the backend has: cuDNN flash attention on GPU, the Pallas flash kernel
          on TPU, the project's XLA attention (layers.py, causal_attention.py) on CPU;
  xla     always the project's XLA attention;
  cudnn   `jax.nn.dot_product_attention(implementation="cudnn")`;
  pallas  `jax.experimental.pallas.ops.tpu.flash_attention`.
A kernel is used only where it applies: its backend, a causal mask that is a key-length mask
(right padding; packed segments and left padding fall back), and for cuDNN a 16-bit float compute
dtype (cuDNN's flash attention takes bf16 and fp16 only: an fp32 model on a GPU runs the XLA
attention). Anything else runs the XLA path, which is also the reference the kernels are tested
against. Decode attention over a slot cache is models/decode/decode_attention.py, or on TPU the paged
kernel of models/decode/paged_decode.py (`decode_attention_impl`).

Shapes: q [B, T, N, H]; k, v [B, K, T, H]; lengths [B] (keys 0..lengths-1 are real).
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
_KERNEL_OF_BACKEND = {"gpu": "cudnn", "cuda": "cudnn", "tpu": "pallas"}


def resolve(impl: str, backend: Optional[str] = None, dtype=None) -> str:
  """The implementation `impl` runs as on `backend` (default: jax's) for activations of `dtype`
  (None: any): a kernel name or "xla"."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"attention_impl={impl!r}; expected one of {IMPLEMENTATIONS}")
  backend = backend or jax.default_backend()
  available = _KERNEL_OF_BACKEND.get(backend)
  if available == "cudnn" and dtype is not None and jnp.dtype(dtype).itemsize != 2:
    if impl == "cudnn":
      logging.warning(
        "attention_impl='cudnn' takes bf16 or fp16; %s activations use the XLA attention", jnp.dtype(dtype).name
      )
      return "xla"
    available = None
  if impl == "auto":
    return available or "xla"
  if impl != "xla" and impl != available:
    logging.warning("attention_impl=%r has no kernel on backend %r; using the XLA attention", impl, backend)
    return "xla"
  return impl


def lengths_if_padding_mask(mask: jax.Array) -> Optional[jax.Array]:
  """[B, T, T] mask -> [B] key lengths when it is exactly causal & (key < length), else None.

  Under jit the check cannot be made on values, so callers pass `lengths` they built themselves
  (the prefill); this helper is for tests and eager use."""
  t = mask.shape[-1]
  lengths = jnp.sum(mask[:, -1], axis=-1)
  causal = jnp.tril(jnp.ones((t, t), bool))
  expected = causal[None] & (jnp.arange(t)[None, None, :] < lengths[:, None, None])
  # Rows past the length may see nothing or the real prefix: only real rows must match.
  real = jnp.arange(t)[None, :] < lengths[:, None]
  same = jnp.where(real[:, :, None], mask == expected, True)
  return lengths if bool(jnp.all(same)) else None


def kernel_attention(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array, impl: str) -> jax.Array:
  """Causal attention of q over k, v with keys < lengths visible, by kernel `impl` (resolved)."""
  b, t, n, h = q.shape
  kv_heads = k.shape[1]
  if impl in ("cudnn", "xla_dot_product"):
    # jax.nn.dot_product_attention reads [B, T, heads, H] and shares kv heads itself (GQA).
    out = jax.nn.dot_product_attention(
      q,
      k.transpose(0, 2, 1, 3),
      v.transpose(0, 2, 1, 3),
      is_causal=True,
      query_seq_lengths=lengths,
      key_value_seq_lengths=lengths,
      scale=1.0 / math.sqrt(h),
      implementation="cudnn" if impl == "cudnn" else "xla",
    )
    real = jnp.arange(t)[None, :] < lengths[:, None]
    return jnp.where(real[:, :, None, None], out, 0.0).astype(q.dtype)
  if impl == "pallas":
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    g = n // kv_heads
    qh = q.transpose(0, 2, 1, 3)  # [B, N, T, H]
    kh = jnp.repeat(k, g, axis=1)  # the kernel has no grouped heads: each kv head serves G
    vh = jnp.repeat(v, g, axis=1)
    ids = jnp.where(jnp.arange(t)[None, :] < lengths[:, None], 1, 0).astype(jnp.int32)
    segments = tpu_flash.SegmentIds(q=ids, kv=ids)
    out = tpu_flash.flash_attention(qh, kh, vh, segment_ids=segments, causal=True, sm_scale=1.0 / math.sqrt(h))
    real = ids.astype(bool)
    return jnp.where(real[:, :, None, None], out.transpose(0, 2, 1, 3), 0.0).astype(q.dtype)
  raise ValueError(f"no attention kernel {impl!r}; expected cudnn or pallas")
