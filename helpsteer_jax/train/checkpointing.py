"""Train checkpoints with Orbax: asynchronous saves, keep the last N, the data position alongside.

A checkpoint is `<workdir>/checkpoints/<step>/` with two items: `state` (the train state as a
nested dict of arrays, each restored straight onto its sharding) and `data` (the data iterator's
position as JSON). Orbax writes into a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest.

Resume order (first that applies; logged by the loop):
  1. the latest checkpoint in `<workdir>/checkpoints` (a restarted or preempted run),
  2. `config.resume_from`, an explicit checkpoint folder of another run,
  3. `config.init_weights`, model weights only (an HF folder or GGUF file), fresh optimizer,
  4. random initialisation.

A newest checkpoint that cannot be restored (a data file lost or cut short, e.g. by a disk that
filled up) raises `CheckpointError` naming its step folder; with `resume_fallback="previous"` (the
default) it is moved aside to `<workdir>/corrupt_checkpoints/` and the newest intact step is used
instead, so a preempted job that lost its last save restarts by itself.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.parallel.tree_paths import path_names

logger = logging.getLogger(__name__)

RESUME_FALLBACKS = ("previous", "none")
CORRUPT_DIR = "corrupt_checkpoints"


_UNREADABLE = re.compile(r'Error reading "([^"]+)" in OCDBT database at [^:]*: ([^;]+)')


def _what_failed(e: BaseException) -> str:
  """The array TensorStore could not read and why, from the chain of `e` (Orbax wraps the one
  line that says so in a long dump of the array's spec), else the first line of `e`."""
  x: Optional[BaseException] = e
  while x is not None:
    match = _UNREADABLE.search(str(x))
    if match:
      name = match.group(1).rsplit("/", 1)[0]
      return (f"array {name!r} cannot be read: {match.group(2).strip()}; a data file of the step is "
              "missing or cut short")
    x = x.__cause__ or x.__context__
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def to_nested_dict(tree: Any) -> dict:
  """Any pytree -> nested dict keyed by the path components (what Orbax stores portably)."""
  out: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = list(path_names(path)) or ["value"]
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = leaf
  return out


def from_nested_dict(template: Any, nested: dict) -> Any:
  """The inverse of `to_nested_dict`: leaves of `nested` put back into `template`'s structure."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = []
  for path, _ in paths:
    node = nested
    for k in list(path_names(path)) or ["value"]:
      node = node[k]
    leaves.append(node)
  return jax.tree_util.tree_unflatten(treedef, leaves)


class Checkpointer:
  """A thin layer over `ocp.CheckpointManager` that knows the train state's structure."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, asynchronous: bool = True):
    self.directory = storage.as_path(storage.absolute(directory))  # local or gs://
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True,
        cleanup_tmp_directories=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_position: dict, force: bool = False) -> bool:
    """Starts an asynchronous save (returns at once; `wait` blocks until it is on disk)."""
    return self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(to_nested_dict(state)),
                                data=ocp.args.JsonSave(data_position)),
        force=force,
    )

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict, int]:
    """(state on its shardings, data position, step) from `step` or the latest checkpoint.

    `abstract_state` is the state's pytree of ShapeDtypeStructs carrying the target shardings.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    folder = self.directory / str(step)
    missing = [item for item in ("state", "data") if not (folder / item).is_dir()]
    if missing:
      raise CheckpointError(f"{folder}: the checkpoint of step {step} has no {' or '.join(missing)} item")
    try:
      restored = self.manager.restore(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardRestore(to_nested_dict(abstract_state)),
                                  data=ocp.args.JsonRestore()),
      )
    except Exception as e:  # Orbax and TensorStore raise several types for a damaged folder
      raise CheckpointError(f"{folder}: the checkpoint of step {step} cannot be restored "
                            f"({_what_failed(e)})") from None
    return from_nested_dict(abstract_state, restored["state"]), dict(restored["data"] or {}), step

  def restore_newest_intact(self, abstract_state: Any, fallback: str = "previous") -> tuple[Any, dict, int]:
    """`restore` of the latest step; when it fails and `fallback="previous"`, that step is moved
    aside (logged) and the next older one is tried, until one restores. With `fallback="none"`, or
    when no step restores, the newest step's `CheckpointError` is raised."""
    if fallback not in RESUME_FALLBACKS:
      raise ValueError(f"resume_fallback={fallback!r}; expected one of {RESUME_FALLBACKS}")
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    first_error: Optional[CheckpointError] = None
    for i, step in enumerate(steps):
      try:
        return self.restore(abstract_state, step)
      except CheckpointError as e:
        if fallback == "none":
          raise
        first_error = first_error or e
        if i + 1 == len(steps):
          raise CheckpointError(f"{first_error}; no older checkpoint in {self.directory} restores "
                                "either") from None
        logger.warning("%s; resume_fallback='previous': moving it aside and resuming from step %d", e,
                       steps[i + 1])
        self._set_aside(step)
    raise AssertionError("unreachable")

  def _set_aside(self, step: int) -> None:
    """Moves a damaged step out of the checkpoint folder (kept for inspection), so the run can
    save that step number again."""
    if jax.process_index() == 0:
      target = self.directory.parent / CORRUPT_DIR / str(step)
      n = 1
      while target.exists():
        target = self.directory.parent / CORRUPT_DIR / f"{step}.{n}"
        n += 1
      target.parent.mkdir(parents=True, exist_ok=True)
      storage.rename(self.directory / str(step), target)
      logger.warning("moved the damaged checkpoint of step %d to %s", step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    self.manager.reload()

  def read_data(self, step: int) -> dict:
    """The JSON item of `step` alone (no array is read)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return dict(restored["data"] or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint(path: str | os.PathLike) -> tuple[epath.Path, Optional[int]]:
  """A resume path may be a run's checkpoint folder (latest step used) or one step's folder."""
  path = storage.as_path(storage.absolute(path))
  if path.name.isdigit() and (path / "state").exists():
    return path.parent, int(path.name)
  if (path / "checkpoints").is_dir():
    return path / "checkpoints", None
  return path, None
