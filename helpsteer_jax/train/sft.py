"""Supervised fine-tuning loss (Feedback, Edit and attribute-conditioned SteerLM models).

Next-token cross-entropy on the tokens `loss_weights` marks (assistant output), summed, so that the
shared step divides by the number of target tokens over the whole (accumulated) batch.
With `chunk` set, the [B, T, V] logits are never held whole: the sequence is cut into chunks whose
logits are computed, reduced to a loss and its gradient, and dropped (`linear_cross_entropy`: what
makes long sequences with a 128k vocabulary fit, and saves the logits' scratch memory on CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from helpsteer_jax.models.llama import Llama
from helpsteer_jax.train.linear_cross_entropy import linear_cross_entropy
from helpsteer_jax.train.step import Batch, LossOutput

BATCH_KEYS = ("input_ids", "targets", "loss_weights", "segment_ids", "positions")


def _token_losses(model: Llama, hidden: jax.Array, targets: jax.Array, weights: jax.Array):
  """hidden [B, C, D], targets/weights [B, C] -> (sum of weighted NLL, sum of weighted hits)."""
  logits = model.logits(hidden)  # [B, C, V] fp32
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
  hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return jnp.sum(nll * weights), jnp.sum(hits * weights)


def sft_loss(model: Llama, batch: Batch, rng: jax.Array, chunk: int = 0) -> LossOutput:
  """batch: input_ids, targets [B, T] int32; loss_weights [B, T] float; segment_ids, positions
  [B, T] int32 (packing: attention stays within a segment, positions restart per segment)."""
  del rng
  for key in BATCH_KEYS:
    if key not in batch:
      raise KeyError(f"SFT batch lacks {key!r}; expected keys {BATCH_KEYS}")
  hidden, _ = model.hidden_states(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])
  targets, weights = batch["targets"], batch["loss_weights"].astype(jnp.float32)
  if chunk <= 0 or chunk >= targets.shape[1]:
    total, hits = _token_losses(model, hidden, targets, weights)
  else:
    head, vocab_axis = model.output_head()
    sharding = model.sharding
    total, hits = linear_cross_entropy(
      hidden,
      head,
      targets,
      weights,
      vocab_axis=vocab_axis,
      chunk=chunk,
      constrain_logits=None if sharding is None else (lambda x: model.constrain_logits(x)),
    )
  return LossOutput(total=total, weight=jnp.sum(weights), metrics={"token_accuracy": hits})
