"""Output projection and next-token cross-entropy fused, in sequence chunks, gradients in one pass.

`linear_cross_entropy(hidden, head, ...)` returns the weighted NLL sum and the weighted count of
argmax hits of `logits = hidden . head` without ever holding the [B, T, V] logits: the sequence is
cut into chunks, and each chunk's logits are computed, reduced and dropped. Its gradient is
computed in the same pass (a custom VJP): the loss is linear in its own cotangent, so the forward
works out d(total)/d(hidden) and d(total)/d(head) for a cotangent of one, and the backward only
scales them. Against autodiff through a checkpointed chunk loop this saves the recomputation of the
logits (3 vocabulary-sized matmuls instead of 4); against whole-row logits it saves their memory:
at SmolLM2's 49k vocabulary and 8 x 512 tokens, the logits, their softmax and gradient took 1.5 GB
of the step's scratch memory, which XLA:CPU allocates fresh (and page-faults in) on every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Optional

import jax
import jax.numpy as jnp


def linear_cross_entropy(
  hidden: jax.Array,  # [B, T, D] final-norm hidden states
  head: jax.Array,  # [V, D] (vocab_axis=0, a tied embedding) or [D, V] (vocab_axis=1)
  targets: jax.Array,  # [B, T] int32
  weights: jax.Array,  # [B, T] float32 (0 = no loss on that token)
  *,
  vocab_axis: int,
  chunk: int,
  constrain_logits: Optional[Callable[[jax.Array], jax.Array]] = None,
) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted NLL, sum of weighted argmax hits), both fp32 scalars.

  The logits are computed in the dtype of `hidden` with fp32 accumulation and reduced in fp32.
  `chunk` must divide T. `constrain_logits` (optional) places each [B, chunk, V] logits block on
  the mesh, as the model's own logits would be.
  """
  if vocab_axis not in (0, 1):
    raise ValueError(f"vocab_axis={vocab_axis}; expected 0 ([V, D]) or 1 ([D, V])")
  t = hidden.shape[1]
  if chunk <= 0 or t % chunk:
    raise ValueError(f"sequence length {t} is not a multiple of loss chunk {chunk}")
  return _fused(vocab_axis, chunk, constrain_logits, hidden, head, targets, weights.astype(jnp.float32))


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[B, T, ...] -> [T / chunk, B, chunk, ...]."""
  return jnp.moveaxis(x.reshape(x.shape[0], x.shape[1] // chunk, chunk, *x.shape[2:]), 1, 0)


def _unchunk(x: jax.Array) -> jax.Array:
  """[n, B, chunk, ...] -> [B, n * chunk, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def _chunk_loss(h, head, tg, w, vocab_axis, constrain_logits, with_grads: bool):
  """One chunk: h [B, C, D], tg/w [B, C], head in h's dtype -> (nll sum, hits sum[, dh [B, C, D],
  dhead])."""
  b, c, d = h.shape
  hm = h.reshape(b * c, d)
  logits = jax.lax.dot_general(
    hm, head, (((1,), (1 - vocab_axis,)), ((), ())), preferred_element_type=jnp.float32
  )  # [M, V]
  if constrain_logits is not None:
    logits = constrain_logits(logits.reshape(b, c, -1)).reshape(b * c, -1)
  tg, w = tg.reshape(-1), w.reshape(-1)
  # One exp per logit: e is kept for the gradient rather than recomputed from a logsumexp (on
  # XLA:CPU the exp dominates this elementwise work: 3x faster than logsumexp + softmax + argmax).
  top = jnp.max(logits, axis=-1)
  e = jnp.exp(logits - top[:, None])
  sum_e = jnp.sum(e, axis=-1)
  target_logit = jnp.take_along_axis(logits, tg[:, None], axis=-1)[:, 0]
  total = jnp.sum((top + jnp.log(sum_e) - target_logit) * w)
  # A hit is the target reaching the row's maximum (argmax up to exact ties).
  hits = jnp.sum((target_logit >= top).astype(jnp.float32) * w)
  if not with_grads:
    return total, hits
  # d(total)/d(logits) = w * (softmax - onehot(target)).
  is_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1) == tg[:, None]
  g = e * (w / sum_e)[:, None] - jnp.where(is_target, w[:, None], 0.0)
  g = g.astype(h.dtype)
  dh = jax.lax.dot_general(g, head, (((1,), (vocab_axis,)), ((), ())), preferred_element_type=jnp.float32)  # [M, D]
  if vocab_axis == 0:
    dhead = jax.lax.dot_general(g, hm, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  else:
    dhead = jax.lax.dot_general(hm, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return total, hits, dh.reshape(b, c, d), dhead


def _run(vocab_axis, chunk, constrain_logits, hidden, head, targets, weights, with_grads: bool):
  zero = jnp.zeros((), jnp.float32)
  xs = (_chunks(hidden, chunk), _chunks(targets, chunk), _chunks(weights, chunk))
  compute_head = head.astype(hidden.dtype)  # cast once, not per chunk
  if not with_grads:

    def body(carry, x):
      total, hits = _chunk_loss(x[0], compute_head, x[1], x[2], vocab_axis, constrain_logits, False)
      return (carry[0] + total, carry[1] + hits), None

    (total, hits), _ = jax.lax.scan(body, (zero, zero), xs)
    return total, hits

  def body_with_grads(carry, x):
    total, hits, dhead = carry
    t, h, dh, dw = _chunk_loss(x[0], compute_head, x[1], x[2], vocab_axis, constrain_logits, True)
    return (total + t, hits + h, dhead + dw), dh

  dhead0 = jnp.zeros(head.shape, jnp.float32)
  (total, hits, dhead), dh = jax.lax.scan(body_with_grads, (zero, zero, dhead0), xs)
  return total, hits, _unchunk(dh), dhead


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(vocab_axis, chunk, constrain_logits, hidden, head, targets, weights):
  return _run(vocab_axis, chunk, constrain_logits, hidden, head, targets, weights, with_grads=False)


def _fused_fwd(vocab_axis, chunk, constrain_logits, hidden, head, targets, weights):
  total, hits, dhidden, dhead = _run(
    vocab_axis, chunk, constrain_logits, hidden, head, targets, weights, with_grads=True
  )
  return (total, hits), (dhidden.astype(hidden.dtype), dhead.astype(head.dtype))


def _fused_bwd(vocab_axis, chunk, constrain_logits, residuals, cotangents):
  del vocab_axis, chunk, constrain_logits
  dhidden, dhead = residuals
  g_total, _ = cotangents  # hits is a count: no gradient flows through it
  # Targets and loss weights are data: no cotangent.
  return g_total.astype(dhidden.dtype) * dhidden, g_total.astype(dhead.dtype) * dhead, None, None


_fused.defvjp(_fused_fwd, _fused_bwd)
