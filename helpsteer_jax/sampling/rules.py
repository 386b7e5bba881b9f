"""Choosing the next token from logits: greedy, temperature, top-k and top-p.

Top-p never sorts the whole vocabulary: it works on the `candidates` most likely tokens found with
`lax.top_k` (the top-k value when one is set, else `top_p_candidates`), which hold essentially all
of the nucleus for any realistic distribution while costing O(V) instead of O(V log V).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def sample_next(
    logits: jax.Array,  # [B, V] fp32
    rng: jax.Array,
    temperature: float,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    top_p_candidates: int = 1024,
) -> jax.Array:
  """Next token ids [B] int32. `temperature == 0` is greedy (argmax) regardless of the rest."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  vocab = logits.shape[-1]
  if top_k is None and (top_p is None or top_p >= 1.0):
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
  k = min(vocab, top_k if top_k is not None else top_p_candidates)
  top_logits, top_ids = jax.lax.top_k(logits, k)  # [B, k], sorted descending
  if top_p is not None and top_p < 1.0:
    probs = jax.nn.softmax(top_logits, axis=-1)
    # Keep a token if the mass strictly before it is below top_p (the first token always stays).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    top_logits = jnp.where(mass_before < top_p, top_logits, -jnp.inf)
  choice = jax.random.categorical(rng, top_logits, axis=-1)
  return jnp.take_along_axis(top_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def sample_rows(
    logits: jax.Array,  # [B, V] fp32
    keys: jax.Array,  # [B] typed keys, one per row
    temperature: jax.Array,  # [B] fp32; 0 = greedy
    top_k: jax.Array,  # [B] int32; 0 = no top-k
    top_p: jax.Array,  # [B] fp32; 1 = no top-p
    candidates: int = 1024,
) -> jax.Array:
  """Next token ids [B] int32 with each row's own settings and key (`sample_next` per row).

  A row's token depends only on its logits, settings and key, never on its neighbours: each row
  draws from its own key (vmapped), so rows of different requests share one compiled step. Top-k
  and top-p work on the `candidates` most likely tokens (a top-k above it acts as `candidates`).
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  sampled = temperature > 0
  restricted = sampled & ((top_k > 0) | (top_p < 1.0))
  scaled = logits / jnp.where(sampled, temperature, 1.0)[:, None]
  draw = jax.vmap(lambda key, row: jax.random.categorical(key, row))

  def full(_):
    return draw(keys, scaled).astype(jnp.int32)

  def nucleus(_):
    k = min(scaled.shape[-1], candidates)
    top_logits, top_ids = jax.lax.top_k(scaled, k)  # [B, k], sorted descending
    rank = jnp.arange(k)[None, :]
    keep = (top_k[:, None] <= 0) | (rank < top_k[:, None])
    top_logits = jnp.where(keep, top_logits, -jnp.inf)
    probs = jax.nn.softmax(top_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    top_logits = jnp.where(mass_before < top_p[:, None], top_logits, -jnp.inf)
    choice = draw(keys, top_logits)
    return jnp.take_along_axis(top_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)

  # Each branch runs only when some row needs it (a greedy batch skips both).
  zeros = jnp.zeros_like(greedy)
  plain = jax.lax.cond(jnp.any(sampled & ~restricted), full, lambda _: zeros, None)
  cut = jax.lax.cond(jnp.any(restricted), nucleus, lambda _: zeros, None)
  return jnp.where(restricted, cut, jnp.where(sampled, plain, greedy))
