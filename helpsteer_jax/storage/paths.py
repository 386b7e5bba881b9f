"""What a path string is: local (a plain path or file://) or a URL of a store (gs://, s3://).

A URL without the client library it needs fails at start-up with one line naming the package to
install; it never falls through to a local folder named `gs:`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from typing import Optional

from etils import epath

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# The packages through which epath reaches each store (tensorflow's gfile serves all three).
CLIENTS: dict[str, tuple[str, ...]] = {
  "gs": ("gcsfs", "tensorflow"),
  "s3": ("s3fs", "tensorflow"),
  "az": ("adlfs",),
}


class StorageError(OSError):
  """A path that cannot be read or written; the message names it."""


class MissingStorageClient(StorageError):
  """A URL whose client library is not installed; the message names the package."""


def scheme_of(path: str | os.PathLike) -> Optional[str]:
  """'gs' for gs://bucket/x, None for a local path (file:// counts as local)."""
  match = _SCHEME.match(os.fspath(path))
  if not match or match.group(1).lower() == "file":
    return None
  return match.group(1).lower()


def is_remote(path: str | os.PathLike) -> bool:
  return scheme_of(path) is not None


def check_client(path: str | os.PathLike) -> None:
  """Raises `MissingStorageClient` when `path` is a URL whose client library is missing."""
  scheme = scheme_of(path)
  if scheme is None:
    return
  if scheme not in CLIENTS:
    raise StorageError(
      f"{os.fspath(path)}: unsupported storage scheme {scheme}:// (supported: "
      f"local paths, {', '.join(s + '://' for s in CLIENTS)})"
    )
  packages = CLIENTS[scheme]
  if not any(importlib.util.find_spec(name) is not None for name in packages):
    raise MissingStorageClient(
      f"{os.fspath(path)}: {scheme}:// paths need the package {packages[0]} (pip install {packages[0]})"
    )


def check_paths(values: Iterable[object]) -> None:
  """`check_client` on each value that is a store URL (gs://, s3://, az://), before any work
  starts; other values (local paths, http:// endpoints, numbers) are left alone."""
  for value in values:
    if isinstance(value, (str, os.PathLike)) and scheme_of(value) in CLIENTS:
      check_client(value)


def _local(path: str) -> str:
  return path[len("file://") :] if path.startswith("file://") else path


def as_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an `epath.Path`, its client checked (file:// becomes the plain local path)."""
  check_client(path)
  text = os.fspath(path)
  return epath.Path(text if is_remote(text) else _local(text))


def join(base: str | os.PathLike, *names: str) -> str:
  """`os.path.join` for local paths and URLs alike."""
  text = os.fspath(base)
  if not is_remote(text):
    return os.path.join(_local(text), *names)
  return "/".join([text.rstrip("/"), *(name.strip("/") for name in names)])


def absolute(path: str | os.PathLike) -> str:
  """A local path made absolute; a URL as it is."""
  text = os.fspath(path)
  return text if is_remote(text) else os.path.abspath(_local(text))
