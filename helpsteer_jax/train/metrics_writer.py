"""Metrics of process 0: JSON lines in `<workdir>/metrics.jsonl` and TensorBoard event files.

Every line is `{"step": s, "split": "train"|"eval", <name>: value, ...}`, flushed as written.
On resume, lines past the restored step are dropped first, so the file always shows the loss
curve of the run as it continued (no duplicated steps from work redone after a crash). In a
bucket the file is an append log of objects (`storage.object_log`), read back the same way.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.storage.object_log import log_exists

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
  def __init__(self, workdir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = storage.join(workdir, METRICS_FILE)
    self._tb = None
    self._log: Optional[JsonlAppender] = None
    if not enabled:
      return
    storage.makedirs(workdir)
    self._log = JsonlAppender(self.path)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # metrics.jsonl still has everything
        SummaryWriter = None
      if SummaryWriter is not None:
        self._tb = SummaryWriter(storage.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops lines with a step greater than `step` (work that a resumed run redoes)."""
    if self._log is None or not log_exists(self.path):
      return
    kept = []
    for line in read_text(self.path).splitlines():
      try:
        if json.loads(line).get("step", 0) <= step:
          kept.append(line)
      except json.JSONDecodeError:  # a line cut short by a crash
        continue
    self._log.rewrite("".join(k + "\n" for k in kept))

  def write(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
    if self._log is None:
      return
    row: dict[str, Any] = {"step": int(step), "split": split}
    for key, value in metrics.items():
      value = float(value)
      row[key] = value if math.isfinite(value) else str(value)
    self._log.append([row])
    if self._tb is not None:
      for key, value in metrics.items():
        self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
      self._tb.flush()

  def write_hparams(self, hparams: dict[str, Any], config_json: str) -> None:
    """The run's resolved settings for TensorBoard: the hyperparameters table and the full JSON."""
    if self._tb is None:
      return
    self._tb.add_text("config", f"```\n{config_json}\n```", 0)
    # name="." keeps the hyperparameters in this run's folder instead of a timestamped one.
    self._tb.add_hparams(hparams, {}, name=".")
    self._tb.flush()

  def close(self) -> None:
    if self._log is not None:
      self._log.compact()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | os.PathLike, split: Optional[str] = "train") -> list[dict[str, Any]]:
  path = storage.join(workdir, METRICS_FILE)
  rows = [json.loads(line) for line in read_text(path).splitlines() if line.strip()]
  return [r for r in rows if split is None or r.get("split") == split]
