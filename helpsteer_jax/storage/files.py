"""File operations on local paths and bucket URLs, one function each, all through `etils.epath`.

Local files keep the guarantees the package relies on: `write_atomic` writes a temporary file,
fsyncs it and renames it over the target, so a crash never leaves a half-written file under the
final name. An object store gives the same guarantee by itself: an object appears whole when its
upload completes, or not at all.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from etils.epath import backend

from helpsteer_jax.storage.paths import as_path, is_remote, join


def open_file(path: str | os.PathLike, mode: str = "r") -> IO[Any]:
  """Opens `path` (text modes as UTF-8); remote files support r, w and their binary forms."""
  if "b" in mode:
    return as_path(path).open(mode)
  if not is_remote(path):
    return as_path(path).open(mode, encoding="utf-8")
  # fsspec's text mode takes the locale's encoding: wrap the binary stream instead.
  return io.TextIOWrapper(as_path(path).open(mode + "b"), encoding="utf-8")


def sync(f: IO[Any]) -> None:
  """Flushes `f` and, for a local file, fsyncs it (an object is durable once closed)."""
  f.flush()
  try:
    fileno = f.fileno()
  except (AttributeError, OSError, ValueError):
    return
  os.fsync(fileno)


def read_bytes(path: str | os.PathLike) -> bytes:
  return as_path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
  return read_bytes(path).decode("utf-8")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes `data` to `path` so that readers see the old content or the new, never a part."""
  payload = data.encode("utf-8") if isinstance(data, str) else data
  text = os.fspath(path)
  if is_remote(text):
    try:
      as_path(text).write_bytes(payload)  # one upload: the object appears whole or not at all
    except OSError as e:
      raise _naming(e, text) from e
    return
  tmp = f"{text}.tmp.{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(payload)
      sync(f)
    os.replace(tmp, text)
  except OSError as e:  # a full disk, a read-only folder: the old file stays, the partial one goes
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise _naming(e, text) from e


def _naming(error: OSError, path: str) -> OSError:
  """`error` with a message that names the file being written (an OS error on a temporary file
  or from a storage client often names neither the target nor the cause in plain words)."""
  reason = error.strerror or str(error)
  return (
    type(error)(error.errno, f"{path}: cannot write ({reason})")
    if error.errno
    else OSError(f"{path}: cannot write ({reason})")
  )


def _fresh(path: str | os.PathLike) -> None:
  """Drops what the client cached about `path`'s folder: gcsfs keeps listings, and another process
  (a resumed run, a test polling a live run) may have changed the folder since."""
  text = os.fspath(path)
  if is_remote(text):
    backend.fsspec_backend.fs(text).invalidate_cache(text)  # the client epath itself uses


def create_exclusive(path: str | os.PathLike, data: bytes) -> None:
  """Writes the object `path` only if it does not exist yet (GCS: ifGenerationMatch=0), else raises
  `FileExistsError`: of two writers racing for one name, one wins. Remote paths only."""
  fs, key = fsspec.core.url_to_fs(os.fspath(path))
  with fs.open(key, "xb") as f:
    f.write(data)


def exists(path: str | os.PathLike) -> bool:
  _fresh(path)
  return as_path(path).exists()


def is_file(path: str | os.PathLike) -> bool:
  _fresh(path)
  return as_path(path).is_file()


def is_dir(path: str | os.PathLike) -> bool:
  _fresh(path)
  return as_path(path).is_dir()


def makedirs(path: str | os.PathLike) -> None:
  """Creates the folder and its parents (a no-op in a bucket beyond a marker, as gcsfs does)."""
  as_path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str | os.PathLike) -> list[str]:
  """The names in folder `path`, sorted; [] when it does not exist."""
  _fresh(path)
  folder = as_path(path)
  if not folder.is_dir():
    return []
  return sorted(child.name for child in folder.iterdir())


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
  """Paths in `folder` matching `pattern` (one level, no `**`), sorted, as strings; names starting
  with a dot match only a pattern that does, as with `glob.glob`."""
  _fresh(folder)
  return sorted(
    join(folder, match.name)
    for match in as_path(folder).glob(pattern)
    if pattern.startswith(".") or not match.name.startswith(".")
  )


def remove(path: str | os.PathLike, missing_ok: bool = True) -> None:
  as_path(path).unlink(missing_ok=missing_ok)


def rmtree(path: str | os.PathLike) -> None:
  as_path(path).rmtree(missing_ok=True)


def rename(source: str | os.PathLike, target: str | os.PathLike) -> None:
  """Moves a file or folder (in a bucket: copy then delete, object by object)."""
  as_path(source).rename(as_path(target))


def walk_files(folder: str | os.PathLike) -> Iterator[str]:
  """Every file under `folder`, folders in sorted order, as paths of the folder's kind (a bucket's
  walk names its folders without the scheme; they are given back as URLs)."""
  text = os.fspath(folder)
  _fresh(text)
  base = os.fspath(as_path(text)).split("://", 1)[-1]
  for root, _, names in sorted(as_path(text).walk(), key=lambda entry: os.fspath(entry[0])):
    where = os.fspath(root)
    if is_remote(text):
      relative = where.split("://", 1)[-1][len(base) :].strip("/")
      where = join(text, relative) if relative else text
    for name in sorted(names):
      yield join(where, name)


def size(path: str | os.PathLike) -> int:
  """The file's size in bytes."""
  text = os.fspath(path)
  return os.path.getsize(text) if not is_remote(text) else int(as_path(text).stat().length)


def copy_in(folder: str | os.PathLike, names: list[str], into: str) -> list[str]:
  """Copies the files `names` of `folder` that exist into the local folder `into` (what a library
  that reads only local files, such as a tokenizer's, needs); returns the names copied."""
  copied = []
  for name in names:
    source = join(folder, name)
    if is_file(source):
      with open(os.path.join(into, name), "wb") as f:
        f.write(read_bytes(source))
      copied.append(name)
  return copied


def local_copy(path: str | os.PathLike) -> str:
  """A local file with `path`'s bytes: `path` itself when local, else a copy made once in
  `$HELPSTEER_CACHE/remote/` (default ~/.cache/helpsteer_jax), kept while the object's size is the
  same (for readers that memory-map, such as GGUF's)."""
  text = os.fspath(path)
  if not is_remote(text):
    return text
  cache = os.environ.get("HELPSTEER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "helpsteer_jax")
  digest = hashlib.sha256(text.encode()).hexdigest()[:16]
  local = os.path.join(cache, "remote", f"{digest}-{os.path.basename(text)}")
  if os.path.isfile(local) and os.path.getsize(local) == size(text):
    return local
  os.makedirs(os.path.dirname(local), exist_ok=True)
  tmp = f"{local}.partial.{os.getpid()}"
  with as_path(text).open("rb") as source, open(tmp, "wb") as f:
    while chunk := source.read(64 << 20):
      f.write(chunk)
  os.replace(tmp, local)
  return local


def copy_out(local_folder: str, folder: str | os.PathLike) -> None:
  """Writes every file of `local_folder` (one level) into `folder`, each atomically."""
  makedirs(folder)
  for name in sorted(os.listdir(local_folder)):
    source = os.path.join(local_folder, name)
    if os.path.isfile(source):
      with open(source, "rb") as f:
        write_atomic(join(folder, name), f.read())
