"""AlpacaEval 2's length-controlled win rate: the `length_controlled_v1` GLM of one model.

For the model's annotations i (baseline = output 1, model = output 2) and, stacked before them,
the regularisation rows of AlpacaEval's difficulty table (`alpaca_difficulty`):
    logit P(row's output wins) = phi * tanh(std_delta_len) + psi * instruction_difficulty
                                 + theta * not_gamed_baseline          (no intercept)
with `std_delta_len = (len_baseline - len_model) / std` (characters; the sample standard
deviation, ddof 1, over the model's annotations), the target the judge's preference in [0, 1],
and row weights 1 for the model's rows and lambda / 2 = 0.1 for each of the two gamed baselines'
rows (lambda = 0.2), which pull the length and difficulty slopes toward what the gamed baselines
show. The fit is AlpacaEval's: an L1-penalised logistic regression, objective
    sum_rows weight * CE(target, prediction) + |coef|_1 / C,
with C picked from `np.logspace(-4, 4, 10)` by 5-fold cross-validation (folds over rows, each
row's soft target kept whole; the fold of row g of R is (R - 1 - g) mod 5, the assignment
scikit-learn's GroupKFold makes for groups of equal size) on the weighted mean log loss, then
refitted on all rows (see `choose_c` for fewer rows than folds). The LC win rate is the prediction at zero length difference averaged over
the model's instructions, `mean_i sigmoid(theta + psi * difficulty_i)`; its standard error is
that of those predictions, as AlpacaEval reports it.

Without the table the GLM has neither the difficulty term nor the gamed rows
(`phi * tanh(std_delta_len) + theta`, AlpacaEval's `length_controlled_minimal` without its
regularisation): the number is then flagged as not comparable (`LengthControlled.comparable`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np

from helpsteer_jax.eval.alpaca_difficulty import DifficultyTable
from helpsteer_jax.eval.logistic import fit_logistic, sigmoid

GLM_NAME = "length_controlled_v1"
GLM_NAME_WITHOUT_TABLE = "length_controlled_minimal (no difficulty table)"
REGULARIZE_TO_BASELINE_LAMBDA = 0.2
CS = np.logspace(-4, 4, 10)
N_SPLITS = 5
_EPS = 1e-15  # AlpacaEval's clipping of predictions in its log loss


@dataclasses.dataclass(frozen=True)
class Design:
  x: np.ndarray  # [R, P] features (length, [difficulty,] model indicator)
  y: np.ndarray  # [R] targets in [0, 1]
  weight: np.ndarray  # [R]
  model_rows: np.ndarray  # [R] bool: the model's own annotations (False: the table's rows)
  annotation: np.ndarray  # [R_model] which of the N annotations each model row is
  x_test: np.ndarray  # [N, P] the model's instructions at zero length difference


@dataclasses.dataclass(frozen=True)
class LengthControlled:
  win_rate: float  # percent
  standard_error: float  # percent
  coef: dict[str, float]
  c: float
  comparable: bool
  glm: str
  design: Design


def std_delta_len(len_model: np.ndarray, len_baseline: np.ndarray) -> np.ndarray:
  """[N] (baseline - model length) / its sample standard deviation (AlpacaEval's sign and ddof)."""
  delta = np.asarray(len_baseline, dtype=np.float64) - np.asarray(len_model, dtype=np.float64)
  std = delta.std(ddof=1) if len(delta) > 1 else 0.0
  if not std > 0:
    raise ValueError(
      "length control: every output has the same length difference from the "
      "baseline, so the length feature cannot be standardised"
    )
  return delta / std


def build_design(
  preference: np.ndarray,
  len_model: np.ndarray,
  len_baseline: np.ndarray,
  question_ids: Sequence[str],
  table: Optional[DifficultyTable],
  lam: float = REGULARIZE_TO_BASELINE_LAMBDA,
) -> Design:
  """The GLM's rows: preference [N] (nan = failed annotation, left out of the fit but not of the
  prediction, as in AlpacaEval), lengths [N] in characters, the instruction ids [N]."""
  pref = np.asarray(preference, dtype=np.float64)
  length = np.tanh(std_delta_len(len_model, len_baseline))
  n = len(pref)
  if table is None:
    x_model = np.stack([length, np.ones(n)], axis=1)
    x_test = np.stack([np.zeros(n), np.ones(n)], axis=1)
    x, y, w, mine = x_model, pref, np.ones(n), np.ones(n, dtype=bool)
  else:
    missing = [q for q in question_ids if str(q) not in table.difficulty]
    if missing:
      raise ValueError(
        f"{table.source}: no instruction difficulty for {len(missing)} instructions "
        f"(first: {missing[:5]}); AlpacaEval indexes instructions 0-804 in its order"
      )
    gamma = np.array([table.difficulty[str(q)] for q in question_ids])
    x_model = np.stack([length, gamma, np.ones(n)], axis=1)
    x_test = np.stack([np.zeros(n), gamma, np.ones(n)], axis=1)
    x_table = np.stack(
      [np.tanh(table.std_delta_len), table.instruction_difficulty, table.not_gamed.astype(np.float64)], axis=1
    )
    # Divided by 2: there are two gamed baselines.
    w_table = np.where(table.not_gamed, 1.0, lam / 2.0)
    x = np.concatenate([x_table, x_model])
    y = np.concatenate([table.preference, pref])
    w = np.concatenate([w_table, np.ones(n)])
    mine = np.concatenate([np.zeros(len(x_table), dtype=bool), np.ones(n, dtype=bool)])
  keep = ~np.isnan(y)
  return Design(x[keep], y[keep], w[keep], mine[keep], np.flatnonzero(~np.isnan(pref)), x_test)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
  return fit_logistic(x, y, w, l2=0.0, l1=1.0 / c, max_iter=500).coef


def _mean_log_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, coef: np.ndarray) -> float:
  q = np.clip(sigmoid(x @ coef), _EPS, 1 - _EPS)
  return float(-np.mean(w * (y * np.log(q) + (1 - y) * np.log(1 - q))))


def folds(rows: int, n_splits: int = N_SPLITS) -> np.ndarray:
  """[R] the fold of each row (see the module docstring)."""
  if rows < n_splits:
    raise ValueError(f"length control: {rows} usable rows cannot make {n_splits} folds")
  return (rows - 1 - np.arange(rows)) % n_splits


def choose_c(design: Design, cs: np.ndarray = CS, n_splits: int = N_SPLITS) -> float:
  """The C with the best summed held-out log loss (the first of equals).

  With fewer rows than folds (a few-question smoke run without the table, where AlpacaEval
  itself would stop) there is one row per fold, and with a single row the weakest penalty.
  """
  if len(design.y) < 2:
    return float(cs[-1])
  n_splits = min(n_splits, len(design.y))
  fold = folds(len(design.y), n_splits)
  score = np.zeros(len(cs))  # [C] summed over folds of minus the mean held-out loss
  for k in range(n_splits):
    train, test = fold != k, fold == k
    for j, c in enumerate(cs):
      coef = _fit(design.x[train], design.y[train], design.weight[train], c)
      score[j] -= _mean_log_loss(design.x[test], design.y[test], design.weight[test], coef)
  return float(cs[int(np.argmax(score))])


def fit_length_controlled(
  design: Design, c: Optional[float] = None, counts: Optional[np.ndarray] = None
) -> tuple[np.ndarray, float]:
  """(coef [P], the LC win rate in [0, 1]); `counts` [N] reweights the model's annotations (the
  bootstrap: over the model's instructions, the table's rows kept), `c` None = cross-validated."""
  c = choose_c(design) if c is None else c
  w = design.weight.copy()
  test_w = np.ones(len(design.x_test))
  if counts is not None:
    test_w = np.asarray(counts, dtype=np.float64)
    w[design.model_rows] *= test_w[design.annotation]
  coef = _fit(design.x, design.y, w, c)
  return coef, float(np.sum(test_w * sigmoid(design.x_test @ coef)) / np.sum(test_w))


def length_controlled(
  preference: np.ndarray,
  len_model: np.ndarray,
  len_baseline: np.ndarray,
  question_ids: Sequence[str],
  table: Optional[DifficultyTable],
) -> LengthControlled:
  """AlpacaEval's LC win rate of one model (module docstring)."""
  design = build_design(preference, len_model, len_baseline, question_ids, table)
  if not design.model_rows.any():
    raise ValueError("length control: no annotation has a preference")
  c = choose_c(design)
  coef, _ = fit_length_controlled(design, c)
  pred = sigmoid(design.x_test @ coef)  # [N]
  se = float(pred.std(ddof=1) / np.sqrt(len(pred))) if len(pred) > 1 else 0.0
  names = ("length", "instruction_difficulty", "model") if table is not None else ("length", "model")
  return LengthControlled(
    100 * float(pred.mean()),
    100 * se,
    dict(zip(names, map(float, coef))),
    c,
    table is not None,
    GLM_NAME if table is not None else GLM_NAME_WITHOUT_TABLE,
    design,
  )
