"""Random keys named by what a sample is, never by where it sits in a batch.

`sample_key("run seed", prompt id, stage, candidate index, ...)` hashes its parts into the raw
data of a threefry key. A request's sample j then draws from fold_in(key, j), and its t-th token
from fold_in(fold_in(key, j), t), so the tokens of a sample are the same whether it ran alone, in
any batch, after a resume or on another mesh.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_key(*parts: object) -> np.ndarray:
  """uint32 [2] raw key data (jax.random.wrap_key_data with the default threefry impl)."""
  text = "\x1f".join(str(p) for p in parts).encode("utf-8")
  digest = hashlib.blake2b(text, digest_size=8).digest()
  return np.frombuffer(digest, dtype="<u4").astype(np.uint32).copy()
