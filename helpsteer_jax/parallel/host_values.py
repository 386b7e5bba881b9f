"""Device values brought to the host the same way in one process or several.

In a multi-host run an array laid out over every host's devices (logits split over the vocabulary
by a tensor axis that spans hosts, say) cannot be read by `np.asarray`, which sees only this
process's shards. `to_host` gathers such an array from every process first (a collective: every
process must call it, as every process runs the same program), and reads any other array as is.
`from_process_zero` hands bytes that process 0 alone could read (its run folder) to every process.
"""

from __future__ import annotations

import jax
import numpy as np


def to_host(value: jax.Array) -> np.ndarray:
  """The whole of `value` as a numpy array on this host."""
  if getattr(value, "is_fully_addressable", True):
    return np.asarray(value)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def from_process_zero(data: bytes) -> bytes:
  """Process 0's `data` on every process (a collective in a multi-host run; as is in one
  process): what one process read from its own disk, told to the others."""
  if jax.process_count() == 1:
    return data
  from jax.experimental import multihost_utils

  size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(data), np.int64)))
  buffer = np.zeros(size, np.uint8)
  if jax.process_index() == 0:
    buffer[:] = np.frombuffer(data, np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes()
