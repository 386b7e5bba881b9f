"""A streaming safetensors reader and writer.

The format is an 8-byte little-endian header size, a JSON header
`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the raw bytes.
Reading seeks to one tensor and reads exactly its bytes (no memory map), so host memory holds one
tensor at a time; writing computes the header from shapes first and then streams tensor by tensor.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any, Optional, cast

import ml_dtypes
import numpy as np

from helpsteer_jax import storage

DTYPES: dict[str, np.dtype] = {
  "F64": np.dtype(np.float64),
  "F32": np.dtype(np.float32),
  "F16": np.dtype(np.float16),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "I64": np.dtype(np.int64),
  "I32": np.dtype(np.int32),
  "I16": np.dtype(np.int16),
  "I8": np.dtype(np.int8),
  "U8": np.dtype(np.uint8),
  "BOOL": np.dtype(np.bool_),
  "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
  "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
  """A checkpoint file or tensor is missing, corrupt or not what the model expects."""


class SafetensorsFile:
  """Random access to the tensors of one .safetensors file."""

  def __init__(self, path: str):
    self.path = path
    if not storage.is_file(path):
      raise CheckpointError(f"{path}: file not found")
    size = storage.size(path)
    with storage.open_file(path, "rb") as f:
      raw = f.read(8)
      if len(raw) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
      (header_size,) = struct.unpack("<Q", raw)
      if header_size > min(_MAX_HEADER, size - 8):
        raise CheckpointError(
          f"{path}: corrupt safetensors header (declares {header_size} header bytes, file has {size})"
        )
      try:
        header = json.loads(f.read(header_size))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
      raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
    self._data_start = 8 + header_size
    self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
      if isinstance(info, dict) and isinstance(info.get("dtype"), str) and info["dtype"] not in DTYPES:
        raise CheckpointError(
          f"{path}: tensor {name!r} has dtype {info['dtype']!r}; expected one of {sorted(DTYPES)} "
          "(quantized formats are read from GGUF files, not safetensors)"
        )
      try:
        dtype = DTYPES[info["dtype"]]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
      except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: tensor {name!r} has an unreadable header entry {info!r}") from None
      expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
      if end - begin != expected or begin < 0:
        raise CheckpointError(
          f"{path}: tensor {name!r} declares {end - begin} bytes, its dtype and shape need {expected}"
        )
      if self._data_start + end > size:
        raise CheckpointError(
          f"{path}: truncated file: tensor {name!r} ends at byte {self._data_start + end}, the file has {size}"
        )
      self.entries[name] = (dtype, shape, begin, end)

  def keys(self) -> list[str]:
    return list(self.entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name][1]

  def read(self, name: str) -> np.ndarray:
    if name not in self.entries:
      raise CheckpointError(f"{self.path}: no tensor named {name!r}")
    dtype, shape, begin, end = self.entries[name]
    out = np.empty(shape, dtype)
    with storage.open_file(self.path, "rb") as f:
      f.seek(self._data_start + begin)
      view = out.reshape(-1).view(np.uint8).data
      # Binary mode gives a buffered reader (local or remote), which can read straight into the array.
      reader = cast(io.BufferedIOBase, f)
      got = 0
      while got < end - begin:
        n = reader.readinto(view[got:])
        if not n:
          raise CheckpointError(f"{self.path}: truncated while reading tensor {name!r}")
        got += n
    return out


# A tensor to write: name, shape, dtype, and a function returning its host array when called.
PendingTensor = tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]


def write_safetensors(path: str, tensors: Iterable[PendingTensor], metadata: Optional[dict[str, str]] = None) -> None:
  """Writes tensors one at a time; each `fetch()` is called only when its bytes are written."""
  tensors = list(tensors)
  header: dict[str, Any] = {}
  if metadata:
    header["__metadata__"] = dict(metadata)
  offset = 0
  for name, shape, dtype, _ in tensors:
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header[name] = {
      "dtype": DTYPE_NAMES[np.dtype(dtype)],
      "shape": list(shape),
      "data_offsets": [offset, offset + nbytes],
    }
    offset += nbytes
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # align the data section to 8 bytes
  # A local file is written under a temporary name and renamed when whole, so a crash never leaves
  # a half-written file under the final name; an object appears only when its upload completes.
  remote = storage.is_remote(path)
  tmp = path if remote else path + ".partial"
  with storage.open_file(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)))
    f.write(encoded)
    for name, shape, dtype, fetch in tensors:
      array = np.ascontiguousarray(fetch(), dtype=dtype)
      if array.shape != tuple(shape):
        raise CheckpointError(f"{path}: tensor {name!r} has shape {array.shape}, header says {shape}")
      f.write(array.reshape(-1).view(np.uint8).data)
  if not remote:
    os.replace(tmp, path)
