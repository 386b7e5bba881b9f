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
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


def _key(entry: Any) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def to_nested_dict(tree: Any) -> dict:
  """Any pytree -> nested dict keyed by the path components (what Orbax stores portably)."""
  out: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [_key(k) for k in path] or ["value"]
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
    for k in [_key(k) for k in path] or ["value"]:
      node = node[k]
    leaves.append(node)
  return jax.tree_util.tree_unflatten(treedef, leaves)


class Checkpointer:
  """A thin layer over `ocp.CheckpointManager` that knows the train state's structure."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, asynchronous: bool = True):
    self.directory = pathlib.Path(directory).absolute()
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
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(to_nested_dict(abstract_state)),
                                data=ocp.args.JsonRestore()),
    )
    return from_nested_dict(abstract_state, restored["state"]), dict(restored["data"] or {}), step

  def read_data(self, step: int) -> dict:
    """The JSON item of `step` alone (no array is read)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    return dict(restored["data"] or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint(path: str | os.PathLike) -> tuple[pathlib.Path, Optional[int]]:
  """A resume path may be a run's checkpoint folder (latest step used) or one step's folder."""
  path = pathlib.Path(path).absolute()
  if path.name.isdigit() and (path / "state").exists():
    return path.parent, int(path.name)
  if (path / "checkpoints").is_dir():
    return path / "checkpoints", None
  return path, None
