"""Weighted logistic regression by (proximal) Newton's method: the fitting step of every score.

Arena-Hard's Bradley-Terry ratings and AlpacaEval's length-controlled GLM are both maximum
likelihood logistic regressions with per-row weights (bootstrap counts, strong-verdict repeats,
down-weighted regularisation rows) and, for AlpacaEval, soft labels (a judge's probability
instead of a 0/1 outcome). Newton's method on the full Hessian converges in a handful of steps
for the few parameters these fits have and needs no tuning, so the scores do not depend on a
machine-learning library (the tests check the optima against scikit-learn's).

Penalties, per parameter, in the parametrisation the reference tools use:
  * `l2`: `l2/2 * coef^2`. scikit-learn's `LogisticRegression(C=c)` (its default penalty, which
    arena-hard-auto's style-controlled fit uses with c = 1) is `l2 = 1/c`; the tiny default keeps
    an unpenalised fit finite when the data are separable (a model that wins every battle).
  * `l1`: `l1 * |coef|`. scikit-learn's L1 fit with `C=c` (AlpacaEval's length-controlled GLM)
    is `l1 = 1/c`. The non-smooth term is handled by proximal Newton: each step minimises the
    local quadratic model plus the exact L1 term by coordinate descent (soft thresholding), so
    coefficients that the penalty sets to zero are exactly zero.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class LogisticFit:
  coef: np.ndarray  # [P]
  iterations: int
  converged: bool
  loss: float


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
  return -np.logaddexp(0.0, -z)


def sigmoid(z: Union[np.ndarray, float]) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: np.ndarray, l1: np.ndarray, coef: np.ndarray) -> float:
  z = x @ coef
  nll = -(w * (y * _log_sigmoid(z) + (1.0 - y) * _log_sigmoid(-z))).sum()
  return float(nll + 0.5 * (l2 * coef * coef).sum() + (l1 * np.abs(coef)).sum())


def _soft_threshold(r: float, t: float) -> float:
  return math.copysign(max(abs(r) - t, 0.0), r)


# Up to this many parameters the L1 subproblem is solved exactly over its 3^P sign patterns;
# above, by coordinate descent.
EXACT_L1_MAX_PARAMS = 6


def _quadratic_l1(b: np.ndarray, hess: np.ndarray, l1: np.ndarray, z: np.ndarray) -> float:
  return float(b @ z + 0.5 * z @ hess @ z + l1 @ np.abs(z))


def _prox_exact(b: np.ndarray, hess: np.ndarray, l1: np.ndarray) -> np.ndarray:
  """argmin_z b.z + z.H.z/2 + l1.|z| for a small positive definite H, exactly.

  On each face of the orthants (a sign pattern s in {-1, 0, 1}^P) the objective is a smooth
  quadratic; a face's stationary point H_SS z_S = -(b_S + l1_S s_S) that keeps its signs is a
  feasible point, and the face holding the optimum yields the optimum itself, so the best of the
  sign-consistent stationary points is the minimiser.
  """
  p = len(b)
  best, best_value = np.zeros(p), _quadratic_l1(b, hess, l1, np.zeros(p))
  for pattern in itertools.product((-1.0, 0.0, 1.0), repeat=p):
    s = np.asarray(pattern)
    on = s != 0
    if not on.any():
      continue
    try:
      z_on = np.linalg.solve(hess[np.ix_(on, on)], -(b[on] + l1[on] * s[on]))
    except np.linalg.LinAlgError:
      continue
    if np.any(z_on * s[on] < 0):
      continue
    z = np.zeros(p)
    z[on] = z_on
    value = _quadratic_l1(b, hess, l1, z)
    if value < best_value:
      best, best_value = z, value
  return best


def _prox_coordinate_descent(coef: np.ndarray, grad: np.ndarray, hess: np.ndarray, l1: np.ndarray) -> np.ndarray:
  z = coef.copy()
  for _ in range(1000):
    biggest = 0.0
    for j in range(len(z)):
      if hess[j, j] <= 0:
        continue
      # The smooth model in z_j alone: hess_jj/2 z_j^2 + r z_j (+ const).
      r = grad[j] + hess[j] @ (z - coef) - hess[j, j] * z[j]
      new = -_soft_threshold(r, l1[j]) / hess[j, j]
      biggest = max(biggest, abs(new - z[j]))
      z[j] = new
    if biggest < 1e-15:
      break
  return z


def _prox_newton_step(coef: np.ndarray, grad: np.ndarray, hess: np.ndarray, l1: np.ndarray) -> np.ndarray:
  """argmin_d grad.d + d.H.d/2 + l1.|coef + d|, solved for z = coef + d: exactly for few
  parameters (the LC GLM has 2-3), else by cyclic coordinate descent (soft thresholding)."""
  if len(coef) <= EXACT_L1_MAX_PARAMS:
    z = _prox_exact(grad - hess @ coef, hess, l1)
  else:
    z = _prox_coordinate_descent(coef, grad, hess, l1)
  return coef - z  # the step is subtracted, as a Newton step is


def fit_logistic(
  x: np.ndarray,
  y: np.ndarray,
  weights: np.ndarray | None = None,
  l2: Union[float, np.ndarray] = 1e-6,
  max_iter: int = 200,
  tol: float = 1e-10,
  l1: Union[float, np.ndarray] = 0.0,
) -> LogisticFit:
  """Minimises `sum_i w_i * CE(y_i, sigmoid(x_i . coef)) + l2/2 * |coef|^2 + l1 * |coef|_1`
  (no intercept; `l2` and `l1` are scalars or [P], one strength per parameter).

  x: [N, P] features; y: [N] targets in [0, 1] (soft labels allowed); weights: [N] >= 0.
  Add a column of ones to `x` for an intercept.
  """
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.ndim != 2 or y.shape != (x.shape[0],):
    raise ValueError(f"fit_logistic: x must be [N, P] and y [N]; got {x.shape} and {y.shape}")
  if np.any((y < 0) | (y > 1)):
    raise ValueError("fit_logistic: targets must lie in [0, 1]")
  w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
  if w.shape != y.shape or np.any(w < 0):
    raise ValueError(f"fit_logistic: weights must be [N] >= 0; got shape {w.shape}")
  p = x.shape[1]
  ridge = np.broadcast_to(np.asarray(l2, dtype=np.float64), (p,)).copy()
  lasso = np.broadcast_to(np.asarray(l1, dtype=np.float64), (p,)).copy()
  if np.any(ridge < 0) or np.any(lasso < 0):
    raise ValueError("fit_logistic: penalties l2 and l1 must be >= 0")
  coef = np.zeros(p)
  loss = _loss(x, y, w, ridge, lasso, coef)
  for it in range(1, max_iter + 1):
    z = x @ coef
    prob = sigmoid(z)
    grad = x.T @ (w * (prob - y)) + ridge * coef
    hess = (x * (w * prob * (1.0 - prob))[:, None]).T @ x + np.diag(ridge)
    # A tiny jitter keeps the solve defined for all-zero feature columns.
    hess = hess + 1e-12 * np.eye(p)
    step = _prox_newton_step(coef, grad, hess, lasso) if lasso.any() else np.linalg.solve(hess, grad)
    # Backtracking: Newton can overshoot where the curvature collapses (near separation).
    scale = 1.0
    while True:
      candidate = coef - scale * step
      new_loss = _loss(x, y, w, ridge, lasso, candidate)
      if new_loss <= loss + 1e-12 * max(1.0, abs(loss)) or scale < 1e-6:
        break
      scale *= 0.5
    coef, improvement, loss = candidate, loss - new_loss, new_loss
    if np.max(np.abs(scale * step)) < 1e-9 or abs(improvement) < tol * max(1.0, abs(loss)):
      return LogisticFit(coef, it, True, loss)
  return LogisticFit(coef, max_iter, False, loss)
