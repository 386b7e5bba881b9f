"""A GGUF header parser: metadata and the tensor index, with errors that name the file.

Layout (little-endian): magic `GGUF`, u32 version (2 or 3), u64 tensor count, u64 metadata count,
the metadata (`key: string, u32 type, value`; arrays are `u32 item type, u64 count, items`), one
info per tensor (`name, u32 n_dims, u64 dims fastest-first, u32 ggml type, u64 offset`), padding
to `general.alignment` (32 by default), then the tensor data.

`gguf.GGUFReader` builds numpy views for every metadata item, which takes seconds for a 128K-token
vocabulary and its merges; this parser reads them in one pass (the gguf package still supplies the
type enum, block sizes and dequantization). Tensor bytes stay in a read-only memory map and are only
touched when a tensor is dequantized.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Any, Union

import gguf
import numpy as np

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MISSING = object()

# GGUF metadata value types -> (struct format, numpy dtype) for the fixed-size ones.
_SCALARS = {
  0: ("B", np.uint8),
  1: ("b", np.int8),
  2: ("H", np.uint16),
  3: ("h", np.int16),
  4: ("I", np.uint32),
  5: ("i", np.int32),
  6: ("f", np.float32),
  7: ("?", np.bool_),
  10: ("Q", np.uint64),
  11: ("q", np.int64),
  12: ("d", np.float64),
}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  name: str
  tensor_type: Any  # gguf.GGMLQuantizationType
  shape: tuple[int, ...]  # ggml order: fastest-varying dimension first
  offset: int  # absolute byte offset in the file
  n_bytes: int
  data: np.ndarray  # numpy layout (slowest first): float32/float16 values, or uint8 blocks per row


class _Cursor:
  def __init__(self, buf: memoryview):
    self.buf, self.pos = buf, 0

  def take(self, n: int) -> memoryview:
    if n < 0 or self.pos + n > len(self.buf):
      raise _Truncated()
    out = self.buf[self.pos : self.pos + n]
    self.pos += n
    return out

  def scalar(self, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, self.take(size))[0]

  def string(self) -> str:
    return bytes(self.take(self.scalar("Q"))).decode("utf-8", errors="replace")

  def value(self, kind: int) -> Any:
    if kind == _STRING:
      return self.string()
    if kind == _ARRAY:
      item, count = self.scalar("I"), self.scalar("Q")
      if item == _STRING:
        return [self.string() for _ in range(count)]
      if item not in _SCALARS:
        raise ValueError(f"array of unknown value type {item}")
      dtype = np.dtype(_SCALARS[item][1]).newbyteorder("<")
      return np.frombuffer(self.take(count * dtype.itemsize), dtype).tolist()
    if kind not in _SCALARS:
      raise ValueError(f"unknown value type {kind}")
    return self.scalar(_SCALARS[kind][0])


class GGUFFile:
  """One parsed GGUF file: `metadata(key)`, `tensors` by GGUF name, and the path for messages."""

  def __init__(self, path: Union[str, os.PathLike]):
    self.path = os.fspath(path)
    if not storage.is_file(self.path):
      raise CheckpointError(f"{self.path}: file not found")
    local = storage.local_copy(self.path)  # the tensors are memory-mapped: a bucket's file is copied once
    size = os.path.getsize(local)
    with open(local, "rb") as f:
      magic = f.read(4)
    if magic != GGUF_MAGIC:
      raise CheckpointError(f"{self.path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    self._map = np.memmap(local, dtype=np.uint8, mode="r")
    try:
      self._parse(_Cursor(self._map.data), size)
    except _Truncated:
      raise CheckpointError(
        f"{self.path}: truncated or corrupt GGUF header (it runs past the end of the {size}-byte file)"
      ) from None
    except (ValueError, UnicodeDecodeError, struct.error) as e:
      raise CheckpointError(f"{self.path}: corrupt GGUF header ({e})") from None

  @classmethod
  def of(cls, source: Union["GGUFFile", Any, str, os.PathLike]) -> "GGUFFile":
    """Accepts a GGUFFile, a path, or a `gguf.GGUFReader` (re-read from its file)."""
    if isinstance(source, GGUFFile):
      return source
    filename = getattr(getattr(source, "data", None), "filename", None)
    return cls(filename if filename is not None else source)

  @property
  def architecture(self) -> str:
    return str(self.fields.get("general.architecture", "<missing>"))

  def has(self, key: str) -> bool:
    return key in self.fields

  def metadata(self, key: str, default: Any = _MISSING) -> Any:
    """The value of a metadata key (str, int, float, bool or list); `default` when absent."""
    if key in self.fields:
      return self.fields[key]
    if default is _MISSING:
      raise CheckpointError(f"{self.path}: GGUF metadata key {key!r} is missing")
    return default

  def _parse(self, cur: _Cursor, size: int) -> None:
    cur.take(4)
    version = cur.scalar("I")
    if version not in SUPPORTED_VERSIONS:
      raise ValueError(f"GGUF version {version}; this reader supports versions {SUPPORTED_VERSIONS} (little-endian)")
    n_tensors, n_fields = cur.scalar("Q"), cur.scalar("Q")
    self.version = version
    self.fields: dict[str, Any] = {}
    for _ in range(n_fields):
      key = cur.string()
      self.fields[key] = cur.value(cur.scalar("I"))
    infos = []
    for _ in range(n_tensors):
      name = cur.string()
      dims = tuple(cur.scalar("Q") for _ in range(cur.scalar("I")))
      infos.append((name, dims, cur.scalar("I"), cur.scalar("Q")))
    alignment = int(self.fields.get("general.alignment", DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
      raise ValueError(f"general.alignment = {alignment} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    self.tensors: dict[str, TensorInfo] = {}
    for name, dims, type_id, offset in infos:
      try:
        qtype = gguf.GGMLQuantizationType(type_id)
      except ValueError:
        raise ValueError(f"tensor {name!r} has unknown ggml type id {type_id}") from None
      block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
      numpy_shape = tuple(reversed(dims))
      if dims[0] % block:
        raise ValueError(f"tensor {name!r}: rows of {dims[0]} values do not split into {qtype.name} blocks of {block}")
      n_bytes = int(np.prod(dims[1:], dtype=np.int64)) * dims[0] // block * block_bytes
      begin = data_start + offset
      if begin + n_bytes > size:
        raise CheckpointError(
          f"{self.path}: truncated GGUF file: tensor {name!r} needs bytes up to {begin + n_bytes}, the file has {size}"
        )
      raw = self._map[begin : begin + n_bytes]
      if qtype == gguf.GGMLQuantizationType.F32:
        data = raw.view(np.float32).reshape(numpy_shape)
      elif qtype == gguf.GGMLQuantizationType.F16:
        data = raw.view(np.float16).reshape(numpy_shape)
      else:  # rows of packed blocks, as gguf.quants.dequantize expects
        data = raw.reshape(numpy_shape[:-1] + (dims[0] // block * block_bytes,))
      self.tensors[name] = TensorInfo(name, qtype, dims, begin, n_bytes, data)
