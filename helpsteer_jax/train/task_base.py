"""What every trainer's task shares: its config, its tokenizer, and data iterators from config blocks."""

from __future__ import annotations

from typing import Any

import ml_collections

from helpsteer_jax.train import model_setup


class TaskBase:
  """Subclasses add `abstract_model`, `build_model`, `loss_fn`, `batch_spec` and `export`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self._tokenizer = None

  @property
  def tokenizer(self) -> Any:
    if self._tokenizer is None:
      self._tokenizer = model_setup.load_tokenizer_for(self.config)
    return self._tokenizer

  def _iterator(self, data_config: ml_collections.ConfigDict, process_index: int, process_count: int):
    from helpsteer_jax.data.pipeline import make_iterator

    return make_iterator(data_config, self.tokenizer, process_index=process_index, process_count=process_count)

  def train_data(self, process_index: int, process_count: int):
    return self._iterator(self.config.data, process_index, process_count)

  def eval_data(self, process_index: int, process_count: int):
    """Held-out batches when `config.eval_data.dataset` is set, else None."""
    eval_config = self.config.get("eval_data", None)
    if eval_config is None or not eval_config.get("dataset", ""):
      return None
    return self._iterator(eval_config, process_index, process_count)
