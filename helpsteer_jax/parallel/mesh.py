"""Device meshes over (data, fsdp, tensor)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import jax
import numpy as np
from jax.experimental import mesh_utils

from helpsteer_jax.parallel import axes as ax


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills in one -1 ("the rest of the devices") and checks the product equals `num_devices`."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(ax.MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(ax.MESH_AXES)} entries for {ax.MESH_AXES}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one entry may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape}: entries must be positive or -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh shape {shape}: {num_devices} devices are not divisible by {known}")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices, {num_devices} are present")
  return shape


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """A mesh with axes (data, fsdp, tensor); -1 takes the remaining devices.

  Axis types are Auto so that `with_sharding_constraint` and jit shardings propagate as usual.
  """
  devices = list(jax.devices() if devices is None else devices)
  resolved = resolve_mesh_shape(shape, len(devices))
  try:
    # The physical layout's order on TPU (and by device id on GPU), so that the inner axes span
    # the closest devices.
    device_array = mesh_utils.create_device_mesh(resolved, devices=devices)
  except Exception:  # topologies without a known physical layout
    device_array = np.asarray(devices).reshape(resolved)
  return jax.sharding.Mesh(device_array, ax.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(ax.MESH_AXES))
