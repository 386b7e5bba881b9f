"""Llama building blocks: parameters with logical axes, RMSNorm, RoPE, attention, SwiGLU.

Einsum letter legend (used in every einsum of the package):
  B batch, T query positions, S key positions, D model width, N query heads, K key/value heads,
  G query heads per key/value head (N = K * G), H head dim, F mlp width, V vocabulary, L layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.models.causal_attention import (
  FLOOR,
  blocked_causal_attention,
  group_query_heads,
  ungroup_query_heads,
)
from helpsteer_jax.models.config import LlamaConfig, RopeScaling
from helpsteer_jax.models.decode.layer_switch import SwitchedWeight
from helpsteer_jax.parallel import axes as ax


def make_param(
  rngs: nnx.Rngs,
  shape: Sequence[int],
  logical_axes: Sequence[Optional[str]],
  dtype: jnp.dtype,
  fan_in: Optional[int] = None,
  stack: Sequence[int] = (),
) -> nnx.Param:
  """A parameter with `logical_axes` metadata.

  `stack` prepends layer axes (named `layers`) for scanned layers. With `fan_in` the values are
  truncated-normal with std 1/sqrt(fan_in); without it they are ones (norm scales).
  """
  full_shape = tuple(stack) + tuple(shape)
  names = (ax.LAYERS,) * len(stack) + tuple(logical_axes)
  if fan_in is None:
    value = jnp.ones(full_shape, dtype)
  else:
    init = jax.nn.initializers.truncated_normal(stddev=1.0 / math.sqrt(fan_in))
    value = init(rngs.params(), full_shape, jnp.float32).astype(dtype)
  return nnx.Param(value, logical_axes=names)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, normalised in fp32 as transformers does."""

  def __init__(self, dim: int, eps: float, dtype: jnp.dtype, rngs: nnx.Rngs, stack: Sequence[int] = ()):
    self.eps = eps
    self.scale = make_param(rngs, (dim,), (ax.NORM,), dtype, stack=stack)

  def __call__(self, x: jax.Array) -> jax.Array:
    in_dtype = x.dtype
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(in_dtype) * x32.astype(in_dtype)


def contract_last(x: jax.Array, w: jax.Array, dims: int = 1) -> jax.Array:
  """x [..., *C] . w [*C, *O] -> [..., *O], with C the last `dims` axes of x, as one 2-D matmul.

  Why not an einsum: the weight gradient of "BTD,DF->BTF" contracts over both B and T, and XLA:CPU
  runs such a two-axis contraction about 1.7x slower than the same flattened [M, C] x [M, O] matmul
  (the MLP backward of SmolLM2 at 8 x 512 tokens took 0.43 s as einsums, 0.25 s flattened).
  Flattening first gives every forward and backward dot a single contracting axis. The reshapes
  merge a sharded major axis with unsharded minor ones, which GSPMD keeps without communication.
  """
  if isinstance(w, SwitchedWeight):  # a product with the layer's own array (models/decode/layer_switch.py)
    return w.apply(lambda array, x: contract_last(x, array, dims), x)
  c_shape, o_shape = w.shape[:dims], w.shape[dims:]
  if x.shape[x.ndim - dims :] != c_shape:
    raise ValueError(f"contracting axes of x {x.shape} do not match w {w.shape} over {dims} axes")
  c, o = math.prod(c_shape), math.prod(o_shape)
  out = jnp.dot(x.reshape(-1, c), w.reshape(c, o))
  return out.reshape(*x.shape[: x.ndim - dims], *o_shape)


def contract_last_with_rows(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., C] . w [O, C] -> [..., O]: the last axis of x against the last axis of w (a tied
  output head, whose embedding rows are the output units), flattened as in `contract_last`.

  Why not `contract_last(x, w.T)`: at one row of x XLA:CPU lays the transpose out in memory before
  the matrix-vector product, a copy of the whole embedding at every decode step (113 MB read and
  written for SmolLM2, a third of the weights' traffic); contracting w's own last axis reads it
  in place.
  """
  if x.shape[-1] != w.shape[-1]:
    raise ValueError(f"contracting axis of x {x.shape} does not match w {w.shape}")
  out = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), w, (((1,), (1,)), ((), ())))
  return out.reshape(*x.shape[:-1], w.shape[0])


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings (rotate-half convention of the HF Llama checkpoints).


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: Optional[RopeScaling]) -> jax.Array:
  """[H/2] fp32 inverse frequencies, with Llama-3.1 `llama3` band-wise rescaling when given.

  Computed on the host in float64 and rounded once: an fp32 `theta ** x` on device can be a few
  ulps off, and the angle error grows with the position (about 1e-5 rad at position 40), which
  doubled the logit error against transformers' correctly rounded frequencies.
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
  inv_freq = 1.0 / (float(theta) ** exponents)
  if scaling is not None:
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are divided by `factor`, short ones kept, the band between
    # interpolated smoothly.
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor
    )
    interpolated = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = np.where(is_medium, interpolated, scaled)
  return jnp.asarray(inv_freq.astype(np.float32))


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates x [B, T, heads, H] by positions [B, T]; computed in fp32."""
  angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]  # [B, T, H/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Attention.


def grouped_query_attention(
  q: jax.Array, segments: Sequence[tuple[jax.Array, jax.Array, jax.Array]], causal: bool = False
) -> jax.Array:
  """softmax(q k^T / sqrt(H)) v with K kv-heads shared by G = N / K query heads each.

  q [B, T, N, H]; `segments` are (k, v, mask) triples whose keys are attended jointly (one
  softmax over all of them): k and v [B, K, S_i, H], mask [B, T, S_i] (True = may attend).
  Decoding passes the cache and the new chunk as two segments, so the cache is only read, never
  copied to insert the chunk first. Query rows with no visible key (padding) give zeros.

  `causal=True` promises that a single segment is the chunk itself (S = T) under a mask that
  allows no future key. Long chunks are then cut into query blocks that each attend only to the
  keys up to their own end, skipping the all-masked upper triangle (about 45% fewer scores at 8
  blocks), and the backward keeps only the output and each row's logsumexp, as flash attention
  does (see causal_attention.py).
  Returns [B, T, N, H].
  """
  t = q.shape[1]
  block = max(64, t // 8)
  if not (causal and len(segments) == 1 and t % block == 0 and t >= 2 * block):
    return _dense_attention(q, segments)
  ((k, v, mask),) = segments
  return blocked_causal_attention(q, k, v, mask, block)


def _dense_attention(q: jax.Array, segments: Sequence[tuple[jax.Array, jax.Array, jax.Array]]) -> jax.Array:
  """`grouped_query_attention` over every (query, key) score."""
  b, t, n, h = q.shape
  kv_heads = segments[0][0].shape[1]
  g = n // kv_heads
  # Heads come before positions so that both contractions are batched matmuls (the [B, S, K, H]
  # layout was about 3x slower on XLA:CPU), and the G query heads of a kv head and their T
  # positions form one axis Q = G * T so that every dot, forward and backward, contracts a single
  # axis (1.3x faster backward on XLA:CPU).
  q = group_query_heads(q, kv_heads)
  segment_scores = []
  for k, _, mask in segments:
    s = jnp.einsum("BKQH,BKSH->BKQS", q, k, preferred_element_type=jnp.float32) * (1.0 / math.sqrt(h))
    s = s.reshape(b, kv_heads, g, t, k.shape[2])  # [B, K, G, T, S_i]
    segment_scores.append(jnp.where(mask[:, None, None], s, FLOOR))
  scores = jnp.concatenate(segment_scores, axis=-1) if len(segment_scores) > 1 else segment_scores[0]
  # A row with no visible key has every score at FLOOR: its softmax is uniform (finite), and the
  # output row is zeroed below, on [.., H] rather than on the S-wide probabilities.
  probs = jax.nn.softmax(scores, axis=-1).reshape(b, kv_heads, g * t, scores.shape[-1])  # [B, K, Q, S]
  out: jax.Array | float = 0.0
  offset = 0
  for k, v, _ in segments:
    width = k.shape[2]
    part = jax.lax.slice_in_dim(probs, offset, offset + width, axis=-1).astype(v.dtype)
    out = out + jnp.einsum("BKQS,BKSH->BKQH", part, v)
    offset += width
  assert isinstance(out, jax.Array)  # `segments` is not empty (segments[0] is read above)
  out = ungroup_query_heads(out, t)
  any_visible = functools.reduce(jnp.logical_or, [jnp.any(m, axis=-1) for _, _, m in segments])  # [B, T]
  return jnp.where(any_visible[:, :, None, None], out, 0.0).astype(out.dtype)


class AttentionProjections(Protocol):
  """What a decoder block calls on its attention's weights: `Attention`, or the fused layout's
  `FusedAttention` (models/decode/decode_layout.py), which swaps in with the same interface."""

  def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]: ...

  def project_out(self, o: jax.Array) -> jax.Array: ...


class FeedForward(Protocol):
  """`SwiGLU`, or the fused layout's `FusedSwiGLU`."""

  def __call__(self, x: jax.Array) -> jax.Array: ...


class Attention(nnx.Module):
  """Grouped-query self-attention projections: q [D,N,H], k/v [D,K,H], o [N,H,D]."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs, stack: Sequence[int] = ()):
    d, n, k, h = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    dt = config.weight_dtype
    self.q_proj = make_param(rngs, (d, n, h), (ax.EMBED, ax.HEADS, ax.HEAD_DIM), dt, d, stack)
    self.k_proj = make_param(rngs, (d, k, h), (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), dt, d, stack)
    self.v_proj = make_param(rngs, (d, k, h), (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), dt, d, stack)
    self.o_proj = make_param(rngs, (n, h, d), (ax.HEADS, ax.HEAD_DIM, ax.EMBED), dt, n * h, stack)

  def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [B, T, D] -> q [B, T, N, H], k and v [B, T, K, H]."""
    dt = x.dtype
    q = contract_last(x, self.q_proj[...].astype(dt))  # BTD,DNH->BTNH
    k = contract_last(x, self.k_proj[...].astype(dt))  # BTD,DKH->BTKH
    v = contract_last(x, self.v_proj[...].astype(dt))
    return q, k, v

  def project_out(self, o: jax.Array) -> jax.Array:
    """o [B, T, N, H] -> [B, T, D]."""
    return contract_last(o, self.o_proj[...].astype(o.dtype), dims=2)  # BTNH,NHD->BTD


class SwiGLU(nnx.Module):
  """down(silu(x gate) * (x up)): gate/up [D, F], down [F, D]."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs, stack: Sequence[int] = ()):
    d, f, dt = config.hidden_size, config.intermediate_size, config.weight_dtype
    self.gate_proj = make_param(rngs, (d, f), (ax.EMBED, ax.MLP), dt, d, stack)
    self.up_proj = make_param(rngs, (d, f), (ax.EMBED, ax.MLP), dt, d, stack)
    self.down_proj = make_param(rngs, (f, d), (ax.MLP, ax.EMBED), dt, f, stack)

  def __call__(self, x: jax.Array) -> jax.Array:
    dt = x.dtype
    gate = contract_last(x, self.gate_proj[...].astype(dt))  # BTD,DF->BTF
    up = contract_last(x, self.up_proj[...].astype(dt))
    hidden = jax.nn.silu(gate) * up
    return contract_last(hidden, self.down_proj[...].astype(dt))  # BTF,FD->BTD
