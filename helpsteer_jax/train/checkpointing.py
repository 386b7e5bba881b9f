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

A newest checkpoint that cannot be read (a data file lost or cut short, e.g. by a disk that
filled up) raises `CheckpointError` naming its step folder; with `resume_fallback="previous"` (the
default) it is moved aside to `<workdir>/corrupt_checkpoints/` and the newest intact step is used
instead, so a preempted job that lost its last save restarts by itself. A checkpoint that reads
but does not fit the model (another vocabulary, width or dtype: the config changed, the files are
fine) raises `CheckpointMismatch` naming the array and both shapes, and nothing is moved.

A save runs in the background; when it fails (a full disk, a revoked bucket) `check_saved`,
`save`, `wait` and `close` raise `CheckpointSaveError`, one line naming the step's folder and the
OS error, so the loop stops at the next step instead of training on without checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.parallel.tree_paths import path_names

logger = logging.getLogger(__name__)

RESUME_FALLBACKS = ("previous", "none")
CORRUPT_DIR = "corrupt_checkpoints"


class CheckpointMismatch(ValueError):
  """A checkpoint that reads but whose arrays do not fit this run's state (another model or
  optimizer config): the message names the array with the checkpoint's and the model's shape."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint whose (background) write failed: the message names its folder and the error."""

  def __init__(self, message: str, errno: Optional[int] = None):
    super().__init__(message)
    self.errno = errno


_UNREADABLE = re.compile(r'Error reading "([^"]+)" in OCDBT database at [^:]*: ([^;]+)')


def _what_failed(e: BaseException) -> str:
  """The array TensorStore could not read and why, from the chain of `e` (Orbax wraps the one
  line that says so in a long dump of the array's spec), else the first line of `e`."""
  x: Optional[BaseException] = e
  while x is not None:
    match = _UNREADABLE.search(str(x))
    if match:
      name = match.group(1).rsplit("/", 1)[0]
      return f"array {name!r} cannot be read: {match.group(2).strip()}; a data file of the step is missing or cut short"
    x = x.__cause__ or x.__context__
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def _os_error(e: BaseException) -> Optional[OSError]:
  """The first OSError in the chain of `e` (Orbax re-raises a background write's error as is, or
  wrapped)."""
  x: Optional[BaseException] = e
  while x is not None:
    if isinstance(x, OSError):
      return x
    x = x.__cause__ or x.__context__
  return None


def _first_line(e: BaseException, limit: int = 300) -> str:
  lines = str(e).strip().splitlines()
  text = lines[0] if lines else ""
  return f"{type(e).__name__}: {text[:limit]}"


def _flat_arrays(tree: Any) -> dict[str, Any]:
  """Leaves of a nested dict by their '/'-joined path."""
  return {"/".join(path_names(path)): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _describe(shape: Any, dtype: Any) -> str:
  return f"{tuple(shape)} {np.dtype(dtype).name}"


def _mismatches(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
  """Each array of `wanted` (ShapeDtypeStructs) that `stored` (Orbax's array metadata) lacks or
  holds with another shape or dtype, and each stored array the model has no place for."""
  out = []
  # The parameters first: the optimizer's moments only repeat their shapes.
  for name, target in sorted(wanted.items(), key=lambda item: not item[0].startswith("params/")):
    have = stored.get(name)
    if have is None:
      out.append(
        f"array {name!r} is not in the checkpoint; the model has it as {_describe(target.shape, target.dtype)}"
      )
      continue
    shape, dtype = getattr(have, "shape", None), getattr(have, "dtype", None)
    if shape is None or dtype is None:
      continue
    if tuple(shape) != tuple(target.shape) or np.dtype(dtype) != np.dtype(target.dtype):
      out.append(
        f"array {name!r} is {_describe(shape, dtype)} in the checkpoint, "
        f"{_describe(target.shape, target.dtype)} in the model"
      )
  out.extend(f"array {name!r} of the checkpoint has no place in the model" for name in stored if name not in wanted)
  return out


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
      max_to_keep=max_to_keep,
      enable_async_checkpointing=asynchronous,
      create=True,
      cleanup_tmp_directories=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._unconfirmed: Optional[int] = None  # the step of a save not yet known to be on disk

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_position: dict, force: bool = False) -> bool:
    """Starts an asynchronous save (returns at once; `wait` blocks until it is on disk). The
    previous save is waited for first, so its failure is raised here naming its own step."""
    self.wait()
    try:
      saved = self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(to_nested_dict(state)), data=ocp.args.JsonSave(data_position)
        ),
        force=force,
      )
    except Exception as e:  # the synchronous part: the temporary folder, the host copy
      raise self._save_error(step, e) from None
    if saved:
      self._unconfirmed = step
    return saved

  def check_saved(self) -> None:
    """Raises `CheckpointSaveError` when the last save has failed in the background; returns at
    once while it is still being written (cheap enough to call after every step)."""
    if self._unconfirmed is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def _save_error(self, step: int, e: BaseException) -> CheckpointSaveError:
    logger.debug("the save of step %d failed", step, exc_info=e)
    os_error = _os_error(e)
    reason = str(os_error) if os_error is not None else _first_line(e)
    intact = [s for s in self.manager.all_steps() if s != step]
    after = f"the newest complete checkpoint is step {max(intact)}" if intact else "no checkpoint is complete"
    return CheckpointSaveError(
      f"{self.directory / str(step)}: the checkpoint of step {step} could not be written "
      f"({reason}); training stops here, {after}",
      getattr(os_error, "errno", None),
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
    self._check_fits(folder, step, abstract_state)
    try:
      restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(to_nested_dict(abstract_state)), data=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # Orbax and TensorStore raise several types for a damaged folder
      raise CheckpointError(f"{folder}: the checkpoint of step {step} cannot be restored ({_what_failed(e)})") from None
    return from_nested_dict(abstract_state, restored["state"]), dict(restored["data"] or {}), step

  def _check_fits(self, folder: epath.Path, step: int, abstract_state: Any) -> None:
    """Raises `CheckpointMismatch` when the step's arrays differ from the model's in name, shape
    or dtype (Orbax would refuse a shape as if the files were damaged, and cast a dtype silently).
    Metadata that cannot be read is left to the restore, which names the damage."""
    handler = ocp.StandardCheckpointHandler()
    try:
      metadata = handler.metadata(folder / "state")
      stored = _flat_arrays(getattr(metadata, "tree", metadata))
    except Exception as e:  # a damaged step: the restore reports it
      logger.debug("%s: no array metadata (%s)", folder, _first_line(e))
      return
    finally:
      handler.close()
    problems = _mismatches(stored, _flat_arrays(to_nested_dict(abstract_state)))
    if problems:
      others = len(problems) - 1
      more = f" (and {others} more array{'s' if others > 1 else ''})" if others else ""
      raise CheckpointMismatch(
        f"{folder}: the checkpoint of step {step} does not fit this run's model: {problems[0]}{more}. "
        "The files are intact; the model or optimizer config differs from the run that saved "
        "them: resume with that config, or train in another workdir"
      )

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
          raise CheckpointError(f"{first_error}; no older checkpoint in {self.directory} restores either") from None
        logger.warning("%s; resume_fallback='previous': moving it aside and resuming from step %d", e, steps[i + 1])
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
    """Blocks until the last save is on disk; raises `CheckpointSaveError` if it failed."""
    step, self._unconfirmed = self._unconfirmed, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      if step is None:
        raise
      raise self._save_error(step, e) from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def has_checkpoint(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds a finished step folder (without opening an Orbax manager, which
  would create it)."""
  return any(name.isdigit() for name in storage.listdir(directory))


def find_checkpoint(path: str | os.PathLike) -> tuple[epath.Path, Optional[int]]:
  """A resume path may be a run's checkpoint folder (latest step used) or one step's folder."""
  folder = storage.as_path(storage.absolute(path))
  if folder.name.isdigit() and (folder / "state").exists():
    return folder.parent, int(folder.name)
  if (folder / "checkpoints").is_dir():
    return folder / "checkpoints", None
  return folder, None
