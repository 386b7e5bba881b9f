"""The checkpoint a recipe keeps: the one of best held-out loss (or pairwise accuracy).

The papers pick their checkpoints by validation (HelpSteer3's Edit RM kept step 80 of its run,
NeMo-Aligner's `checkpoint_callback_params.monitor` with `save_top_k`). After each evaluation the
loop offers the parameters here; when the configured metric improves they are saved to
`<workdir>/best_checkpoint/<step>/` (parameters only, one kept), besides the latest N train
checkpoints. The metric's value is stored with them, so a resumed run keeps comparing against it.

    config.keep_best_by   loss (lowest) | accuracy (highest) | '' (off)
    config.export_from    latest | best: which parameters the end-of-run export writes
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax

from helpsteer_jax import storage
from helpsteer_jax.train.checkpointing import Checkpointer

logger = logging.getLogger(__name__)

# Metric -> whether higher is better.
METRICS = {"loss": False, "accuracy": True}
EXPORT_FROM = ("latest", "best")
FOLDER = "best_checkpoint"


def check_settings(keep_best_by: str, export_from: str) -> None:
  if keep_best_by and keep_best_by not in METRICS:
    raise ValueError(f"keep_best_by={keep_best_by!r}; expected one of {sorted(METRICS)} or '' (off)")
  if export_from not in EXPORT_FROM:
    raise ValueError(f"export_from={export_from!r}; expected one of {EXPORT_FROM}")
  if export_from == "best" and not keep_best_by:
    raise ValueError("export_from='best' needs keep_best_by (loss or accuracy) to choose a checkpoint")


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a pytree of arrays (what a restore places onto)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class BestCheckpoint:
  """Keeps the parameters of the best evaluation so far under `<workdir>/best_checkpoint`."""

  def __init__(self, workdir: str | os.PathLike, metric: str, asynchronous: bool = True):
    if metric not in METRICS:
      raise ValueError(f"keep_best_by={metric!r}; expected one of {sorted(METRICS)}")
    self.metric = metric
    self.higher_is_better = METRICS[metric]
    self.checkpointer = Checkpointer(storage.join(workdir, FOLDER), max_to_keep=1, asynchronous=asynchronous)
    self.step: Optional[int] = self.checkpointer.latest_step()
    self.value: Optional[float] = None
    if self.step is not None:  # a resumed run: compare against what was kept
      self.value = float(self.checkpointer.read_data(self.step)["value"])

  def is_better(self, value: float) -> bool:
    if self.value is None:
      return True
    return value > self.value if self.higher_is_better else value < self.value

  def offer(self, step: int, params: Any, metrics: dict[str, float]) -> bool:
    """Saves `params` when `metrics[metric]` beats the best so far; True if it did."""
    if self.metric not in metrics:
      raise KeyError(
        f"keep_best_by={self.metric!r} but the evaluation reports only {sorted(metrics)}; "
        "set keep_best_by to one of them"
      )
    value = float(metrics[self.metric])
    if not self.is_better(value):
      return False
    self.checkpointer.save(step, params, {"metric": self.metric, "value": value, "step": step}, force=True)
    logger.info(
      "best %s so far (%.6g) at step %d: parameters kept in %s", self.metric, value, step, self.checkpointer.directory
    )
    self.step, self.value = step, value
    return True

  def check_saved(self) -> None:
    """Raises `CheckpointSaveError` when the last kept parameters failed to write."""
    self.checkpointer.check_saved()

  def close(self) -> None:
    self.checkpointer.close()


def restore_best_params(workdir: str | os.PathLike, like_params: Any) -> tuple[Any, int, dict]:
  """(parameters, step, {metric, value, step}) of a run's best checkpoint, placed like `like_params`."""
  directory = storage.join(storage.absolute(workdir), FOLDER)
  checkpointer = Checkpointer(directory, max_to_keep=1, asynchronous=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(
        f"no best checkpoint in {directory}: the run evaluated nothing "
        "(set eval_every and eval_data) or keep_best_by was off"
      )
    params, info, step = checkpointer.restore(abstract_like(like_params), step)
  finally:
    checkpointer.close()
  return params, step, info
