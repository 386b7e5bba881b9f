"""The `mesh` block every config has (training, scaling, evaluation), and the sharding it makes.

config.mesh = mesh_config((1, -1, 1))          # {"shape": (data, fsdp, tensor), "rules": ()}
--config.mesh.shape="(1,1,-1)"                  # -1 = the rest of the devices
--config.mesh.rules="(('mlp', 'fsdp'),)"        # (logical name, mesh axes) over DEFAULT_RULES
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ml_collections import ConfigDict

if TYPE_CHECKING:
  from helpsteer_jax.parallel.partitioning import ShardingContext

ONE_DEVICE = (1, 1, 1)
# Configs import this module, so it imports jax only inside the functions that need it (the
# planner sets up its fake devices before jax starts).


def mesh_config(shape: Sequence[int] = (1, -1, 1), rules: Sequence[tuple[str, Any]] = ()) -> ConfigDict:
  return ConfigDict({"shape": tuple(shape), "rules": tuple(rules)})


def sharding_rules(rules: Sequence[tuple[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
  """DEFAULT_RULES with `rules` overriding entries by logical name (an unknown name fails)."""
  from helpsteer_jax.parallel.rules import DEFAULT_RULES

  merged = dict(DEFAULT_RULES)
  for name, target in rules or ():
    if name not in merged:
      raise KeyError(f"mesh.rules names unknown logical axis {name!r}; known: {sorted(merged)}")
    merged[name] = tuple(target) if isinstance(target, list) else target
  return tuple(merged.items())


def sharding_from_mesh_config(mesh: ConfigDict | None) -> "ShardingContext":
  """The (data, fsdp, tensor) mesh of `mesh.shape` with `mesh.rules`."""
  from helpsteer_jax.parallel.mesh import make_mesh
  from helpsteer_jax.parallel.partitioning import ShardingContext

  mesh = mesh if mesh is not None else mesh_config()
  shape = tuple(mesh.get("shape", (1, -1, 1)))
  return ShardingContext(make_mesh(shape), sharding_rules(mesh.get("rules", None)))


def is_one_device(mesh: ConfigDict) -> bool:
  """A mesh block asking for one device and the default rules: models load unsharded."""
  return tuple(mesh.shape) == ONE_DEVICE and not mesh.get("rules", None)
