"""What a training run leaves about itself: the resolved config at the start, a summary at the end.

`<workdir>/config.json` is the config as resolved after every override (rewritten by each start,
so a resumed run records the settings it continued with), logged too; TensorBoard gets the same
values as hyperparameters. `summary_lines` is what the trainer prints when it ends: steps, tokens,
the best and final held-out loss, and where the checkpoints and the export are.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Optional

import ml_collections
from etils import epath

from helpsteer_jax import storage
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.storage.object_log import log_exists

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


def resolved_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values (tuples as lists, anything else unusual as its string)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"optim": {"learning_rate": 1e-5}}` -> `{"optim/learning_rate": 1e-5}`; values TensorBoard's
  hyperparameter plugin takes (numbers, strings, bools), anything else as its JSON text."""
  out: dict[str, Any] = {}
  for key, value in values.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flat_hparams(value, f"{name}/"))
    elif isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = json.dumps(value)
  return out


def record_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> dict[str, Any]:
  """Logs the resolved config and writes `<workdir>/config.json` (process 0 calls this)."""
  values = resolved_config(config)
  text = json.dumps(values, indent=2, sort_keys=True)
  logger.info("resolved config:\n%s", text)
  storage.write_atomic(workdir / CONFIG_FILE, text + "\n")
  return values


def _eval_losses(metrics_file: epath.Path) -> list[tuple[int, float]]:
  if not log_exists(metrics_file):
    return []
  out = []
  for line in read_text(metrics_file).splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if row.get("split") == "eval" and isinstance(row.get("loss"), (int, float)):
      out.append((int(row["step"]), float(row["loss"])))
  return out


def summary_lines(workdir: epath.Path, step: int, total_steps: int, tokens: int, preempted: bool,
                  best_step: Optional[int], export_dir: str = "", export_from: str = "") -> list[str]:
  """The end-of-run summary, from the run's own files (metrics.jsonl) and its result."""
  state = "preempted at" if preempted else "finished at" if step >= total_steps else "stopped at"
  lines = [f"training {state} step {step} of {total_steps}; {tokens:,} tokens this run"]
  losses = _eval_losses(workdir / "metrics.jsonl")
  if losses:
    best = min(losses, key=lambda x: (x[1] if math.isfinite(x[1]) else math.inf, x[0]))
    lines.append(f"held-out loss: best {best[1]:.4f} at step {best[0]}, final {losses[-1][1]:.4f} "
                 f"at step {losses[-1][0]}")
  else:
    lines.append("held-out loss: none (no held-out data evaluated)")
  lines.append(f"checkpoints: {workdir / 'checkpoints'}")
  if best_step is not None:
    lines.append(f"best checkpoint: step {best_step} in {workdir / 'best_checkpoint'}")
  if export_dir:
    lines.append(f"export ({export_from} weights): {export_dir}")
  lines.append(f"metrics: {workdir / 'metrics.jsonl'}; config: {workdir / CONFIG_FILE}")
  return lines
