"""Device memory arithmetic shared by the planners: named machines, the bytes of a model's weights
and of one decode slot's KV cache per device, mesh axes, and the memory a device reports."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Optional

import jax

from helpsteer_jax.models.config import LlamaConfig

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """A machine the plan is made for: its devices, hosts, memory and bandwidth per device."""

  name: str
  devices: int
  hosts: int
  hbm_gib: float
  hbm_tb_s: float


# Public figures per device: H100 SXM 80 GB HBM3 3.35 TB/s; H200 141 GB 4.8 TB/s; TPU v5p 95 GB
# 2.76 TB/s (4 chips a host: v5p-8 is 4 chips, v5p-16 8 chips on 2 hosts); v6e 32 GB 1.64 TB/s;
# v5e 16 GB 0.82 TB/s (v5e-16: 16 chips on 2 hosts of 8).
ACCELERATORS = {
  "8xH100-80GB": Accelerator("8xH100-80GB", 8, 1, 80 * 1e9 / GIB, 3.35),
  "8xH200": Accelerator("8xH200", 8, 1, 141 * 1e9 / GIB, 4.8),
  "v5p-8": Accelerator("v5p-8", 4, 1, 95, 2.76),
  "v5p-16": Accelerator("v5p-16", 8, 2, 95, 2.76),
  "v6e-8": Accelerator("v6e-8", 8, 1, 32, 1.64),
  "v5e-16": Accelerator("v5e-16", 16, 2, 16, 0.82),
}


# The multi-host training clusters docs/70b.md sizes RLOO for: a v5p-64 slice (32 chips, 4 a host)
# and 4 nodes of 8 H100 80 GB.
TRAINING_CLUSTERS = {
  "v5p-64": Accelerator("v5p-64", 32, 8, 95, 2.76),
  "4x8xH100-80GB": Accelerator("4x8xH100-80GB", 32, 4, 80 * 1e9 / GIB, 3.35),
}


def dtype_bytes(name: str) -> int:
  return {"float32": 4, "bfloat16": 2, "float16": 2}[name]


def weight_bytes_per_device(config: LlamaConfig, fsdp: int, tensor: int) -> int:
  return math.ceil(config.num_params() * dtype_bytes(config.param_dtype) / (fsdp * tensor))


def kv_bytes_per_slot(config: LlamaConfig, length: int, tensor: int) -> int:
  """KV-cache bytes one slot of `length` positions takes on each device."""
  heads = math.ceil(config.num_kv_heads / tensor)
  return 2 * config.num_layers * heads * config.head_dim * length * dtype_bytes(config.dtype)


def mesh_axes(shape: Sequence[int], devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with one -1 entry filled from `devices` (a shape without one is taken
  as it is: a mesh over some of the devices)."""
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh {tuple(shape)}: at most one -1")
  if -1 in shape:
    rest = math.prod(x for x in shape if x != -1)
    if devices % rest:
      raise ValueError(f"mesh {tuple(shape)} does not divide {devices} devices")
    shape[shape.index(-1)] = devices // rest
  data, fsdp, tensor = shape
  return data, fsdp, tensor


def device_memory() -> tuple[Optional[int], int]:
  """(memory limit, bytes in use) of this process's first device; the limit is None where the
  device reports none (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit"), int(stats.get("bytes_in_use", 0))
