"""Bradley-Terry losses, pairwise metrics and the masked attribute MSE against numbers by hand.

softplus(-x) = -log sigmoid(x) = log(1 + e^-x):
  x =  1: 0.31326169    x = -1: 1.31326169    x = 0: log 2 = 0.69314718
  x = -2: 2.12692801    x = -3: 3.04858735
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.train.reward_losses import (
  bradley_terry_loss,
  bt_margin_loss,
  bt_plain_loss,
  bt_scaled_loss,
  masked_mse,
  pairwise_metrics,
)

R_CHOSEN = jnp.array([1.0, 0.0, -0.5])
R_REJECTED = jnp.array([0.0, 2.0, -0.5])  # delta = [1, -2, 0]
LABELS = jnp.array([2.0, -1.0, 3.0])  # |label| = [2, 1, 3]
WEIGHTS = jnp.array([1.0, 0.0, 2.0])


def test_numbers_by_numpy():
  """The constants of this file, recomputed with numpy."""
  np.testing.assert_allclose(
    np.log1p(np.exp(-np.array([1.0, -1.0, 0.0, -2.0, -3.0]))),
    [0.31326169, 1.31326169, 0.69314718, 2.12692801, 3.04858735],
    rtol=1e-8,
  )


def test_plain():
  # mean(0.31326169, 2.12692801, 0.69314718)
  np.testing.assert_allclose(bt_plain_loss(R_CHOSEN, R_REJECTED), 1.04444563, rtol=1e-6)
  # (1 * 0.31326169 + 0 * 2.12692801 + 2 * 0.69314718) / 3
  np.testing.assert_allclose(bt_plain_loss(R_CHOSEN, R_REJECTED, WEIGHTS), 0.56651868, rtol=1e-6)
  np.testing.assert_allclose(bradley_terry_loss("plain", R_CHOSEN, R_REJECTED), 1.04444563, rtol=1e-6)


def test_margin():
  # delta - |label| = [-1, -3, -3]: mean(1.31326169, 3.04858735, 3.04858735)
  np.testing.assert_allclose(bt_margin_loss(R_CHOSEN, R_REJECTED, LABELS), 2.47014546, rtol=1e-6)
  # weights [3, 1, 0]: (3 * 1.31326169 + 3.04858735) / 4
  np.testing.assert_allclose(
    bt_margin_loss(R_CHOSEN, R_REJECTED, LABELS, jnp.array([3.0, 1.0, 0.0])), 1.74709311, rtol=1e-6
  )
  np.testing.assert_allclose(bradley_terry_loss("margin", R_CHOSEN, R_REJECTED, LABELS), 2.47014546, rtol=1e-6)


def test_scaled():
  # mean(2 * 0.31326169, 1 * 2.12692801, 3 * 0.69314718) = mean(0.62652338, 2.12692801, 2.07944154)
  np.testing.assert_allclose(bt_scaled_loss(R_CHOSEN, R_REJECTED, LABELS), 1.61096431, rtol=1e-6)
  # (0.62652338 + 2 * 2.07944154) / 3
  np.testing.assert_allclose(bt_scaled_loss(R_CHOSEN, R_REJECTED, LABELS, WEIGHTS), 1.59513549, rtol=1e-6)
  np.testing.assert_allclose(bradley_terry_loss("scaled", R_CHOSEN, R_REJECTED, LABELS), 1.61096431, rtol=1e-6)


def test_gradients_and_stability():
  # d/d r_c of softplus(-(r_c - r_r)) = -sigmoid(-delta); mean over 3 rows divides by 3.
  grad = jax.grad(lambda rc: bt_plain_loss(rc, R_REJECTED))(R_CHOSEN)
  np.testing.assert_allclose(grad, -np.array([0.26894142, 0.88079708, 0.5]) / 3, rtol=1e-6)
  # Large deltas neither overflow nor lose the linear tail.
  big = bt_plain_loss(jnp.array([-200.0, 200.0]), jnp.array([0.0, 0.0]))
  np.testing.assert_allclose(big, 100.0, rtol=1e-6)  # mean(200, ~0)
  # All-zero weights: 0, not NaN.
  assert float(bt_plain_loss(R_CHOSEN, R_REJECTED, jnp.zeros(3))) == 0.0


def test_kind_checks():
  with pytest.raises(ValueError, match="expected one of"):
    bradley_terry_loss("hinge", R_CHOSEN, R_REJECTED, LABELS)
  with pytest.raises(ValueError, match="needs preference strengths"):
    bradley_terry_loss("scaled", R_CHOSEN, R_REJECTED)
  with pytest.raises(ValueError, match=r"\[B\]"):
    bt_plain_loss(R_CHOSEN[:, None], R_REJECTED[:, None])


def test_pairwise_metrics():
  m = jax.jit(pairwise_metrics)(R_CHOSEN, R_REJECTED)
  np.testing.assert_allclose(m["accuracy"], 0.5)  # (1 + 0 + 1/2) / 3: a tie counts half
  np.testing.assert_allclose(m["margin"], -1.0 / 3.0, rtol=1e-6)  # (1 - 2 + 0) / 3
  np.testing.assert_allclose(m["reward_chosen"], 0.5 / 3, rtol=1e-6)
  weighted = pairwise_metrics(R_CHOSEN, R_REJECTED, WEIGHTS)
  np.testing.assert_allclose(weighted["accuracy"], 2.0 / 3.0, rtol=1e-6)  # (1 + 2 * 0.5) / 3
  np.testing.assert_allclose(weighted["margin"], 1.0 / 3.0, rtol=1e-6)  # (1 + 2 * 0) / 3


PRED = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
TARGET = jnp.array([[2.0, -100.0, 1.0], [-100.0, -100.0, 4.0]])


def test_masked_mse():
  # Present: (1 - 2)^2 = 1, (3 - 1)^2 = 4, (0 - 4)^2 = 16 -> 21 / 3.
  loss, m = jax.jit(lambda p, y: masked_mse(p, y, attribute_names=("a", "b", "c")))(PRED, TARGET)
  np.testing.assert_allclose(loss, 7.0, rtol=1e-6)
  np.testing.assert_allclose(m["mse_per_attribute"], [1.0, 0.0, 10.0], rtol=1e-6)  # b: no label
  np.testing.assert_allclose(m["count_per_attribute"], [1.0, 0.0, 2.0])
  np.testing.assert_allclose(m["mse/c"], 10.0, rtol=1e-6)
  assert float(m["labels_present"]) == 3.0

  # Missing labels get no gradient; present ones 2 (p - y) / 3.
  grad = jax.grad(lambda p: masked_mse(p, TARGET)[0])(PRED)
  np.testing.assert_allclose(grad, [[-2 / 3, 0.0, 4 / 3], [0.0, 0.0, -8 / 3]], rtol=1e-6)

  # A zero-weight row drops out: (1 + 4) / 2.
  loss, m = masked_mse(PRED, TARGET, weights=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(loss, 2.5, rtol=1e-6)
  np.testing.assert_allclose(m["count_per_attribute"], [1.0, 0.0, 1.0])

  # Nothing present: 0, not NaN.
  loss, _ = masked_mse(PRED, jnp.full(PRED.shape, -100.0))
  assert float(loss) == 0.0
  with pytest.raises(ValueError, match="2 attribute names"):
    masked_mse(PRED, TARGET, attribute_names=("a", "b"))
