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
