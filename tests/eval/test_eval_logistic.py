"""The logistic solver against scikit-learn's LogisticRegression on the three fits the scores use:
Arena-Hard's unpenalised Bradley-Terry fit, its L2-penalised style-controlled fit, and
AlpacaEval's L1-penalised length-controlled GLM with soft labels and row weights."""

import math
import warnings

import numpy as np
import pytest

from helpsteer_jax.eval.logistic import fit_logistic, sigmoid

sklearn = pytest.importorskip("sklearn")
from sklearn import linear_model  # noqa: E402

TOL = 1e-4
# scikit-learn 1.8 moved the penalty kind from `penalty` to `l1_ratio` (and "none" to C = inf).
_NEW_API = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
UNPENALISED = {"C": np.inf} if _NEW_API else {"penalty": None}
L1 = {"l1_ratio": 1.0} if _NEW_API else {"penalty": "l1"}


def _sklearn(x, y01, weights, **kwargs):
  """coef of scikit-learn's fit (no intercept) on 0/1 labels with sample weights."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    model = linear_model.LogisticRegression(fit_intercept=False, max_iter=100000, **kwargs)
    model.fit(x, y01, sample_weight=weights)
  return model.coef_[0]


def _soft_as_weighted(x, p, w):
  """A soft target p with weight w == a 1-row of weight w*p plus a 0-row of weight w*(1-p)."""
  return (
    np.concatenate([x, x]),
    np.concatenate([np.ones(len(p)), np.zeros(len(p))]),
    np.concatenate([w * p, w * (1 - p)]),
  )


def _battle_design(rng, n_models=4, n=3000, style=False):
  """Battles of random pairs of models with known ratings; outcome 1 = model a wins."""
  a = rng.integers(0, n_models, n)
  b = (a + rng.integers(1, n_models, n)) % n_models
  x = np.zeros((n, n_models))
  x[np.arange(n), a] += math.log(10)
  x[np.arange(n), b] -= math.log(10)
  cols = [x]
  if style:
    cols.append(rng.normal(size=(n, 4)))
  x = np.concatenate(cols, axis=1)
  truth = np.concatenate([rng.normal(0, 0.3, n_models), rng.normal(0, 0.5, 4) if style else []])
  y = (rng.random(n) < sigmoid(x @ truth)).astype(float)
  return x, y


def test_unpenalised_bradley_terry_matches_sklearn():
  rng = np.random.default_rng(0)
  x, y = _battle_design(rng)
  x = x[:, 1:]  # the first model anchored at 0, as the scorer does: the design has full rank
  counts = rng.integers(1, 4, len(y)).astype(float)  # bootstrap-like row weights
  ours = fit_logistic(x, y, counts, l2=0.0, tol=1e-14)
  ref = _sklearn(x, y, counts, tol=1e-12, solver="lbfgs", **UNPENALISED)
  assert ours.converged
  assert np.max(np.abs(ours.coef - ref)) < TOL


def test_l2_style_fit_matches_sklearn_default_c():
  rng = np.random.default_rng(1)
  x, y = _battle_design(rng, style=True)  # every model's column kept: the L2 term identifies them
  ours = fit_logistic(x, y, None, l2=1.0, tol=1e-14)
  ref = _sklearn(x, y, None, C=1.0, tol=1e-12, solver="lbfgs")
  assert np.max(np.abs(ours.coef - ref)) < TOL
  # Ties as half a win each, in one soft row, equal the two-row form that scikit-learn needs.
  p = np.where(rng.random(len(y)) < 0.2, 0.5, y)
  ours_soft = fit_logistic(x, p, 2 * np.ones(len(p)), l2=1.0, tol=1e-14)
  ref_soft = _sklearn(*_soft_as_weighted(x, p, 2 * np.ones(len(p))), C=1.0, tol=1e-12, solver="lbfgs")
  assert np.max(np.abs(ours_soft.coef - ref_soft)) < TOL


@pytest.mark.parametrize("c", [0.05, 0.36, 2.78, 1e4])
def test_l1_length_controlled_glm_matches_sklearn_liblinear(c):
  rng = np.random.default_rng(2)
  n = 805
  length = np.tanh(rng.normal(size=n))
  difficulty = rng.normal(0, 1.2, n)
  x_model = np.stack([length, difficulty, np.ones(n)], axis=1)
  x_gamed = np.stack([np.tanh(rng.normal(size=2 * n)), np.tile(difficulty, 2), np.zeros(2 * n)], axis=1)
  x = np.concatenate([x_gamed, x_model])
  p = sigmoid(x @ np.array([-0.8, 0.7, 0.3]) + rng.normal(0, 0.5, len(x)))  # soft preferences
  w = np.concatenate([np.full(2 * n, 0.1), np.ones(n)])
  ours = fit_logistic(x, p, w, l2=0.0, l1=1.0 / c, tol=1e-14, max_iter=500)
  ref = _sklearn(*_soft_as_weighted(x, p, w), C=c, solver="liblinear", tol=1e-8, **L1)
  assert ours.converged
  assert np.max(np.abs(ours.coef - ref)) < TOL


def test_strong_l1_sets_coefficients_exactly_to_zero():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(200, 3))
  y = (rng.random(200) < 0.5).astype(float)
  fit = fit_logistic(x, y, l2=0.0, l1=1e4)
  assert np.all(fit.coef == 0.0)


def test_bad_penalties_are_refused():
  with pytest.raises(ValueError, match="penalties"):
    fit_logistic(np.ones((3, 1)), np.ones(3), l1=-1.0)
