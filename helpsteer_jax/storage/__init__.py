"""Where a run reads and writes: local paths and bucket URLs (gs://bucket/run1) alike.

Every path of a run goes through `etils.epath`, the layer Orbax and tensorstore write
checkpoints through, so a workdir, a search's output folder or an export can sit in a bucket:
a TPU VM's disk goes with the VM.

- `paths`: what kind of path a string is, and a clear start-up error when the client library a
  URL needs (gcsfs for gs://) is missing.
- `files`: reading, writing (atomically), listing and removing, one function each.
- `object_log`: an append-only JSONL log on a store without appends (one object per append).
- `object_lock`: a run folder's lock on a store without file locks (a leased owner record).
"""

from helpsteer_jax.storage.files import (
  copy_in,
  copy_out,
  exists,
  glob,
  is_dir,
  is_file,
  listdir,
  local_copy,
  makedirs,
  open_file,
  read_bytes,
  read_text,
  remove,
  rename,
  rmtree,
  size,
  sync,
  walk_files,
  write_atomic,
)
from helpsteer_jax.storage.paths import (
  MissingStorageClient,
  StorageError,
  absolute,
  as_path,
  check_paths,
  is_remote,
  join,
  scheme_of,
)

__all__ = [
  "copy_in",
  "copy_out",
  "size",
  "MissingStorageClient",
  "StorageError",
  "absolute",
  "as_path",
  "check_paths",
  "exists",
  "glob",
  "is_dir",
  "is_file",
  "is_remote",
  "join",
  "listdir",
  "local_copy",
  "makedirs",
  "open_file",
  "read_bytes",
  "read_text",
  "remove",
  "rename",
  "rmtree",
  "scheme_of",
  "sync",
  "walk_files",
  "write_atomic",
]
