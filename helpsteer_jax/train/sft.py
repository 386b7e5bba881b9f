"""Supervised fine-tuning loss (Feedback, Edit and attribute-conditioned SteerLM models).

Next-token cross-entropy on the tokens `loss_weights` marks (assistant output), summed, so that the
shared step divides by the number of target tokens over the whole (accumulated) batch.
With `chunk` set, the [B, T, V] logits are never held whole: the sequence is cut into chunks whose
logits are computed, reduced to a loss and dropped, and recomputed in the backward pass (what makes
long sequences with a 128k vocabulary fit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from helpsteer_jax.models.llama import Llama
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
  hidden, _ = model.hidden_states(batch["input_ids"], positions=batch["positions"],
                                  segment_ids=batch["segment_ids"])
  targets, weights = batch["targets"], batch["loss_weights"].astype(jnp.float32)
  t = targets.shape[1]
  if chunk <= 0 or chunk >= t:
    total, hits = _token_losses(model, hidden, targets, weights)
  else:
    if t % chunk:
      raise ValueError(f"sequence length {t} is not a multiple of loss chunk {chunk}")
    n = t // chunk

    def split(x):  # [B, T, ...] -> [n, B, chunk, ...]
      return jnp.moveaxis(x.reshape(x.shape[0], n, chunk, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def body(carry, xs):
      h, tg, w = xs
      total, hits = _token_losses(model, h, tg, w)
      return (carry[0] + total, carry[1] + hits), None

    zero = jnp.zeros((), jnp.float32)
    (total, hits), _ = jax.lax.scan(body, (zero, zero), (split(hidden), split(targets), split(weights)))
  return LossOutput(total=total, weight=jnp.sum(weights), metrics={"token_accuracy": hits})
