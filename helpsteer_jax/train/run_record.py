"""What a training run leaves about itself: what produced it, the resolved config, a summary.

`<workdir>/run_identity.json` (`data/run_identity.py`) records what produced the workdir: the
resolved config, the fingerprint of the init weights (and of RLOO's reward model) and of each
local data file. A start in a workdir that holds a checkpoint is compared with it before any
model loads (`check_workdir`): a field that changes results (batch size, learning rate, model,
data, seed) refuses the resume, naming each field with both values; a longer run (`total_steps`,
`num_epochs`) and fields that say only where or how the run goes (the mesh, intervals, the
export folder) are allowed and logged. `--config.resume=force` continues anyway and logs each
overridden field.

`<workdir>/config.json` is the config as resolved after every override, written only once that
check has passed (a refused resume leaves the record of the run on disk as it was; an allowed or
forced one records the settings it continued with), logged too; TensorBoard gets the same values
as hyperparameters. `summary_lines` is what the trainer prints when it ends: steps, tokens, the
best and final held-out loss, and where the checkpoints and the export are.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Optional

import ml_collections
from etils import epath

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.identity import model_identity
from helpsteer_jax.data.run_identity import Difference, FieldRules, RunIdentity, check_and_record, check_rerun
from helpsteer_jax.data.sources import local_files
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.storage.fingerprints import file_fingerprint
from helpsteer_jax.storage.object_log import log_exists

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"

# Fields that only lengthen the run.
EXTENDS = ("total_steps", "num_epochs", "expected_train_examples", "data.num_epochs")
# Fields that say where or how the run goes, not what it computes. Model and data paths are here
# only where their fingerprints (models.*, inputs.*) stand for them, so a moved file is the same.
IGNORES = (
  "name",
  "resume",
  "resume_fallback",
  "export_dir",
  "mesh",
  "distributed",
  "log_every",
  "eval_every",
  "checkpoint_every",
  "keep_checkpoints",
  "async_checkpoints",
  "tensorboard",
  "progress",
  # The split of the global batch into micro-batches and the loss's chunks: memory, not maths.
  "micro_batch_size",
  "grad_accum_steps",
  "loss_chunk",
  "model.overrides.remat_policy",
  "data.lookahead",
  "eval_data.lookahead",
  "rloo.reward_batch_size",
)


def resolved_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values (tuples as lists, anything else unusual as its string)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def _data_fingerprints(name: str, path: str) -> dict[str, str]:
  """Fingerprints of the local data files `path` names (a file, or a folder of them), by input
  name; {} for data from the hub."""
  if not path:
    return {}
  files = local_files(path)
  if files == [path]:
    return {name: file_fingerprint(path)}
  return {f"{name}/{file.rstrip('/').rsplit('/', 1)[-1]}": file_fingerprint(file) for file in files}


def _models(config: ml_collections.ConfigDict) -> dict[str, dict[str, str]]:
  """The weights the run starts from and, for RLOO, the reward model: path and fingerprint."""
  from helpsteer_jax.train.model_setup import init_weights_path

  paths = {"init": init_weights_path(config)}
  if config.trainer == "rloo":
    paths["reward"] = config.rloo.get("reward_model", "")
  return {role: model_identity(path).to_record() for role, path in paths.items() if path}


def training_identity(config: ml_collections.ConfigDict) -> tuple[RunIdentity, FieldRules]:
  """What this run is, and which of its fields a resume may change."""
  inputs = _data_fingerprints("data", config.data.get("path", ""))
  if "eval_data" in config:
    inputs.update(_data_fingerprints("eval_data", config.eval_data.get("path", "")))
  models = _models(config)
  identity = RunIdentity("training", resolved_config(config), models, inputs)
  return identity, FieldRules(extends=EXTENDS, ignores=IGNORES + _fingerprinted_paths(models, inputs))


def _fingerprinted_paths(models: dict[str, Any], inputs: dict[str, str]) -> tuple[str, ...]:
  """The path fields whose content is compared by fingerprint: the same content moved elsewhere
  is the same run."""
  sources = {name.split("/")[0] for name in inputs}
  covered = {
    "init_weights": "init" in models,
    "rloo.reward_model": "reward" in models,
    "data.path": "data" in sources,
    "eval_data.path": "eval_data" in sources,
  }
  return tuple(field for field, known in covered.items() if known)


def check_workdir(
  config: ml_collections.ConfigDict, workdir: epath.Path, has_work: bool, write: bool
) -> list[Difference]:
  """Compares this run with the one recorded in `workdir` (raising `RunMismatch` on a field that
  changes results unless `config.resume="force"`) and, with `write` (process 0), records it."""
  identity, rules = training_identity(config)
  resume = config.resume
  if write:
    return check_and_record(workdir, identity, rules, resume=resume, has_work=has_work)
  return check_rerun(workdir, identity, rules, resume=resume, has_work=has_work)


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
  """Logs the resolved config and writes `<workdir>/config.json` (process 0 calls this, after
  `check_workdir` has passed)."""
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


def summary_lines(
  workdir: epath.Path,
  step: int,
  total_steps: int,
  tokens: int,
  preempted: bool,
  best_step: Optional[int],
  export_dir: str = "",
  export_from: str = "",
) -> list[str]:
  """The end-of-run summary, from the run's own files (metrics.jsonl) and its result."""
  state = "preempted at" if preempted else "finished at" if step >= total_steps else "stopped at"
  lines = [f"training {state} step {step} of {total_steps}; {tokens:,} tokens this run"]
  losses = _eval_losses(workdir / "metrics.jsonl")
  if losses:
    best = min(losses, key=lambda x: (x[1] if math.isfinite(x[1]) else math.inf, x[0]))
    lines.append(
      f"held-out loss: best {best[1]:.4f} at step {best[0]}, final {losses[-1][1]:.4f} at step {losses[-1][0]}"
    )
  else:
    lines.append("held-out loss: none (no held-out data evaluated)")
  lines.append(f"checkpoints: {workdir / 'checkpoints'}")
  if best_step is not None:
    lines.append(f"best checkpoint: step {best_step} in {workdir / 'best_checkpoint'}")
  if export_dir:
    lines.append(f"export ({export_from} weights): {export_dir}")
  lines.append(f"metrics: {workdir / 'metrics.jsonl'}; config: {workdir / CONFIG_FILE}")
  return lines
