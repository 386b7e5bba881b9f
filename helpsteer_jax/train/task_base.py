"""What every trainer's task shares: its config, its tokenizer, data iterators from config blocks,
and the defaults of the loop's `Task` protocol (`prepare_batch`, `num_tokens`)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from helpsteer_jax.data.pipeline import make_iterator
from helpsteer_jax.train import model_setup


class TaskBase:
  """Subclasses add `abstract_model`, `build_model`, `loss_fn`, `batch_spec` and `export`, and
  override `prepare_batch` / `num_tokens` where their batches differ."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self._tokenizer = None

  @property
  def tokenizer(self) -> Any:
    if self._tokenizer is None:
      self._tokenizer = model_setup.load_tokenizer_for(self.config)
    return self._tokenizer

  def _iterator(self, data_config: ml_collections.ConfigDict, process_index: int, process_count: int):
    return make_iterator(data_config, self.tokenizer, process_index=process_index, process_count=process_count)

  def train_data(self, process_index: int, process_count: int):
    return self._iterator(self.config.data, process_index, process_count)

  def eval_data(self, process_index: int, process_count: int):
    """Held-out batches when `config.eval_data.dataset` is set, else None."""
    eval_config = self.config.get("eval_data", None)
    if eval_config is None or not eval_config.get("dataset", ""):
      return None
    return self._iterator(eval_config, process_index, process_count)

  def num_tokens(self, batch: dict[str, np.ndarray]) -> int:
    """Real tokens from the masks: every `*input_mask` (both sides of a pair), else the non-zero
    `segment_ids` of packed SFT rows."""
    masks = [v for k, v in batch.items() if k.endswith("input_mask")]
    if masks:
      return int(sum(np.count_nonzero(m) for m in masks))
    if "segment_ids" in batch:
      return int(np.count_nonzero(batch["segment_ids"]))
    raise KeyError(f"batch keys {sorted(batch)} have no mask to count tokens from; override num_tokens")

  def prepare_batch(
    self, local: dict[str, np.ndarray], state: Any, graphdef: Any, rest: Any, step: int, to_global
  ) -> tuple[dict[str, jax.Array], dict[str, float], int]:
    """The process-local rows as one global batch; no extra metrics."""
    del state, graphdef, rest, step
    return to_global(local), {}, self.num_tokens(local) * jax.process_count()
