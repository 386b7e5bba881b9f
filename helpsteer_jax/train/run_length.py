"""How long a run trains: `total_steps`, or `num_epochs` passes over the real training data.

Recipes state one or the other (HelpSteer2's RM: 317 steps; HelpSteer3's Feedback SFT: 1 epoch),
so both are first-class. With `num_epochs > 0` the total is counted over the examples the data
actually yields after the length rules (dropped or cut rows, packing, each epoch's dropped
remainder), once at start-up; the schedule, the logs and the progress bar all get that number.

When the data is not at hand (planning a 70B run on a laptop), `expected_train_examples` states
the published size of the training split in examples, and `planned_total_steps` derives the steps
from it the way the iterator would for unpacked rows.
"""

from __future__ import annotations

import logging
from typing import Protocol

import ml_collections

logger = logging.getLogger(__name__)


class CountsEpochs(Protocol):
  def epoch_batches(self, num_epochs: int) -> list[int]: ...


def uses_epochs(config: ml_collections.ConfigDict) -> bool:
  return int(config.get("num_epochs", 0) or 0) > 0


def total_steps(config: ml_collections.ConfigDict, train_data: object) -> int:
  """`config.total_steps`, or with `config.num_epochs > 0` the batches those epochs of
  `train_data` give (counted over the real rows; it must then be `CountsEpochs`, and any
  iterator will do otherwise)."""
  if not uses_epochs(config):
    steps = int(config.total_steps)
    if steps < 1:
      raise ValueError(f"total_steps={steps}; expected at least 1 (or set num_epochs)")
    return steps
  epochs = int(config.num_epochs)
  counter = getattr(train_data, "epoch_batches", None)
  if counter is None:
    raise ValueError(
      f"num_epochs={epochs} but the training data ({type(train_data).__name__}) cannot "
      "count its batches per epoch; set total_steps instead"
    )
  per_epoch = counter(epochs)
  steps = sum(per_epoch)
  if steps < 1:
    raise ValueError(
      f"num_epochs={epochs} gives no full batch of the training data "
      f"(batches per epoch {per_epoch}); check data.batch_size and the length rules"
    )
  logger.info("run length: %d epochs = %d steps (batches per epoch %s)", epochs, steps, per_epoch)
  return steps


def planned_total_steps(config: ml_collections.ConfigDict, batch_size: int) -> int:
  """The steps a run will take, without its data: `total_steps`, or `num_epochs` over
  `expected_train_examples` in batches of `batch_size` (each epoch's remainder dropped)."""
  if not uses_epochs(config):
    return int(config.total_steps)
  examples = int(config.get("expected_train_examples", 0) or 0)
  if examples < 1:
    raise ValueError(
      f"{config.get('name', 'config')}: num_epochs={config.num_epochs} and no "
      "expected_train_examples: the steps cannot be known without the data"
    )
  return int(config.num_epochs) * (examples // batch_size)
