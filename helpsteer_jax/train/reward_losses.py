"""Reward model losses and metrics: Bradley-Terry pairs and attribute regression (pure jax).

Pairs (HelpSteer2-Preference), with delta = r_chosen - r_rejected and the preference strength
|label| (e.g. 1..3):
  plain    -log sigmoid(delta)
  margin   -log sigmoid(delta - |label|)
  scaled   |label| * -log sigmoid(delta)
Each is averaged over the batch, optionally weighted: sum_i w_i l_i / sum_i w_i (weights of 0
drop padding rows of a fixed-shape batch; an all-zero batch gives 0, not NaN).

Regression (HelpSteer / HelpSteer2): MSE between predictions [B, O] and labels [B, O] over the
present labels only; a label equal to `IGNORE_LABEL` (-100) is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp

IGNORE_LABEL = -100.0
BT_KINDS = ("plain", "margin", "scaled")


def _weighted_mean(values: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
  """values [B], weights [B] or None -> sum(w v) / sum(w), 0 when every weight is 0."""
  values = values.astype(jnp.float32)
  if weights is None:
    return jnp.mean(values)
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights)
  return jnp.where(total > 0, jnp.sum(weights * values) / jnp.where(total > 0, total, 1.0), 0.0)


def _delta(r_chosen: jax.Array, r_rejected: jax.Array) -> jax.Array:
  if r_chosen.shape != r_rejected.shape or r_chosen.ndim != 1:
    raise ValueError(f"expected rewards [B] and [B], got {r_chosen.shape} and {r_rejected.shape}")
  return r_chosen.astype(jnp.float32) - r_rejected.astype(jnp.float32)


def bt_plain_loss(r_chosen: jax.Array, r_rejected: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
  """r_chosen [B], r_rejected [B], weights [B] -> mean of -log sigmoid(r_c - r_r) (scalar)."""
  return _weighted_mean(-jax.nn.log_sigmoid(_delta(r_chosen, r_rejected)), weights)


def bt_margin_loss(
  r_chosen: jax.Array, r_rejected: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None
) -> jax.Array:
  """r_chosen [B], r_rejected [B], labels [B] -> mean of -log sigmoid(r_c - r_r - |label|)."""
  margin = jnp.abs(labels.astype(jnp.float32))
  return _weighted_mean(-jax.nn.log_sigmoid(_delta(r_chosen, r_rejected) - margin), weights)


def bt_scaled_loss(
  r_chosen: jax.Array, r_rejected: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None
) -> jax.Array:
  """r_chosen [B], r_rejected [B], labels [B] -> mean of |label| * -log sigmoid(r_c - r_r)."""
  scale = jnp.abs(labels.astype(jnp.float32))
  return _weighted_mean(scale * -jax.nn.log_sigmoid(_delta(r_chosen, r_rejected)), weights)


def bradley_terry_loss(
  kind: str,
  r_chosen: jax.Array,
  r_rejected: jax.Array,
  labels: Optional[jax.Array] = None,
  weights: Optional[jax.Array] = None,
) -> jax.Array:
  """The Bradley-Terry variant `kind` (plain, margin or scaled); labels [B] for margin/scaled."""
  if kind == "plain":
    return bt_plain_loss(r_chosen, r_rejected, weights)
  if kind not in BT_KINDS:
    raise ValueError(f"Bradley-Terry loss kind {kind!r}; expected one of {BT_KINDS}")
  if labels is None:
    raise ValueError(f"the {kind} Bradley-Terry loss needs preference strengths (labels [B])")
  fn = bt_margin_loss if kind == "margin" else bt_scaled_loss
  return fn(r_chosen, r_rejected, labels, weights)


def pairwise_metrics(
  r_chosen: jax.Array, r_rejected: jax.Array, weights: Optional[jax.Array] = None
) -> dict[str, jax.Array]:
  """r_chosen [B], r_rejected [B] -> accuracy (chosen scored higher; a tie counts 1/2) and the
  mean margin r_c - r_r, both weighted like the losses; plus the mean chosen/rejected rewards."""
  delta = _delta(r_chosen, r_rejected)
  correct = jnp.where(delta > 0, 1.0, jnp.where(delta == 0, 0.5, 0.0))
  return {
    "accuracy": _weighted_mean(correct, weights),
    "margin": _weighted_mean(delta, weights),
    "reward_chosen": _weighted_mean(r_chosen, weights),
    "reward_rejected": _weighted_mean(r_rejected, weights),
  }


def masked_mse(
  predictions: jax.Array,  # [B, O]
  labels: jax.Array,  # [B, O]; IGNORE_LABEL = missing
  weights: Optional[jax.Array] = None,  # [B] row weights; 0 drops a row
  attribute_names: Optional[Sequence[str]] = None,
  ignore_label: float = IGNORE_LABEL,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean squared error over the present labels (scalar) and metrics.

  The loss is sum((p - y)^2 * present) / #present (0 when no label is present); with row weights
  w, each entry counts w_b times (the counts below are then weighted too). Metrics:
  `mse_per_attribute` [O] and `count_per_attribute` [O] (an attribute with no label in the batch
  has MSE 0 and count 0), plus `mse/<name>` for each of `attribute_names`.
  """
  if predictions.shape != labels.shape or predictions.ndim != 2:
    raise ValueError(f"expected predictions and labels [B, O], got {predictions.shape} and {labels.shape}")
  labels = labels.astype(jnp.float32)
  present = (labels != ignore_label).astype(jnp.float32)
  if weights is not None:
    present = present * weights.astype(jnp.float32)[:, None]
  # where, not a product: a missing label of -100 must not leak a huge (or inf) error into grads
  squared = jnp.where(present != 0, (predictions.astype(jnp.float32) - labels) ** 2, 0.0) * present
  count = jnp.sum(present)
  loss = jnp.where(count > 0, jnp.sum(squared) / jnp.where(count > 0, count, 1.0), 0.0)
  per_count = jnp.sum(present, axis=0)
  per_mse = jnp.where(per_count > 0, jnp.sum(squared, axis=0) / jnp.where(per_count > 0, per_count, 1.0), 0.0)
  metrics = {"loss": loss, "mse_per_attribute": per_mse, "count_per_attribute": per_count, "labels_present": count}
  if attribute_names is not None:
    if len(attribute_names) != predictions.shape[1]:
      raise ValueError(f"{len(attribute_names)} attribute names for {predictions.shape[1]} outputs")
    for i, name in enumerate(attribute_names):
      metrics[f"mse/{name}"] = per_mse[i]
  return loss, metrics
