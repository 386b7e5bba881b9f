"""Metrics of process 0: JSON lines in `<workdir>/metrics.jsonl` and TensorBoard event files.

Every line is `{"step": s, "split": "train"|"eval", <name>: value, ...}`, flushed as written.
On resume, lines past the restored step are dropped first, so the file always shows the loss
curve of the run as it continued (no duplicated steps from work redone after a crash).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Optional


class MetricsWriter:

  def __init__(self, workdir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if not enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # metrics.jsonl still has everything
        SummaryWriter = None
      if SummaryWriter is not None:
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops lines with a step greater than `step` (work that a resumed run redoes)."""
    if not self.enabled or not self.path.exists():
      return
    kept = []
    for line in self.path.read_text().splitlines():
      try:
        if json.loads(line).get("step", 0) <= step:
          kept.append(line)
      except json.JSONDecodeError:  # a line cut short by a crash
        continue
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    tmp.replace(self.path)

  def write(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
    if not self.enabled:
      return
    row: dict[str, Any] = {"step": int(step), "split": split}
    for key, value in metrics.items():
      value = float(value)
      row[key] = value if math.isfinite(value) else str(value)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
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
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | os.PathLike, split: Optional[str] = "train") -> list[dict[str, Any]]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if split is None or r.get("split") == split]
