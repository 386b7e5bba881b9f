"""Logical-to-mesh rules and their application to shapes.

A rule set is a tuple of `(logical_name, mesh_axes)` pairs, where `mesh_axes` is None, one mesh axis
name or a tuple of them (as in MaxText). Rules live in configs; `DEFAULT_RULES` is the FSDP + tensor
parallel layout used unless an experiment overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import jax
from jax.sharding import PartitionSpec

from helpsteer_jax.parallel import axes as ax

MeshAxes = Union[None, str, tuple[str, ...]]
Rules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: Rules = (
  # Parameters: FSDP over the model width, Megatron-style tensor parallelism over heads and MLP.
  (ax.LAYERS, None),
  (ax.EMBED, ax.FSDP),
  (ax.MLP, ax.TENSOR),
  (ax.HEADS, ax.TENSOR),
  (ax.KV_HEADS, ax.TENSOR),
  (ax.HEAD_DIM, None),
  (ax.VOCAB, ax.TENSOR),
  (ax.NORM, None),
  # Activations: batch over data and fsdp, heads / mlp / vocab over tensor.
  (ax.ACT_BATCH, (ax.DATA, ax.FSDP)),
  (ax.ACT_SEQ, None),
  (ax.ACT_EMBED, None),
  (ax.ACT_HEADS, ax.TENSOR),
  (ax.ACT_KV_HEADS, ax.TENSOR),
  (ax.ACT_MLP, ax.TENSOR),
  (ax.ACT_VOCAB, ax.TENSOR),
  # Cache.
  (ax.CACHE_LAYERS, None),
  (ax.CACHE_BATCH, (ax.DATA, ax.FSDP)),
  (ax.CACHE_SEQ, None),
  (ax.CACHE_KV_HEADS, ax.TENSOR),
  (ax.CACHE_HEAD_DIM, None),
)


def _as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
  if mesh_axes is None:
    return ()
  if isinstance(mesh_axes, str):
    return (mesh_axes,)
  return tuple(mesh_axes)


def logical_to_spec(
  logical_axes: Sequence[Optional[str]],
  rules: Rules,
  mesh: Optional[jax.sharding.Mesh] = None,
  shape: Optional[Sequence[int]] = None,
) -> PartitionSpec:
  """Maps logical names to a PartitionSpec.

  With `mesh` and `shape` given, a mesh axis is dropped from a dimension it does not divide (for
  example SmolLM2's 3 KV heads on a tensor axis of 2) and a mesh axis already used by an earlier
  dimension is not used again, so every rule set gives a valid spec for every shape.
  """
  table = dict(rules)
  used: set[str] = set()
  spec: list[MeshAxes] = []
  for dim, name in enumerate(logical_axes):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(table)}")
    chosen = []
    size = 1
    for mesh_axis in _as_tuple(table[name]):
      if mesh_axis in used:
        continue
      if mesh is not None:
        if mesh_axis not in mesh.shape:
          continue
        axis_size = mesh.shape[mesh_axis]
        if shape is not None and shape[dim] % (size * axis_size) != 0:
          continue
        size *= axis_size
      chosen.append(mesh_axis)
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  return PartitionSpec(*spec)
