"""Fingerprints of a run's inputs: short content hashes that tell whether a file is the same.

`file_fingerprint` hashes a whole file (prompt sets, data rows, answer files). `sampled_fingerprint`
is the cheap one for checkpoints of any size: every file's name and size, its first and last
blocks (a safetensors or GGUF header, the tensor index) and blocks spread evenly through it, so a
70B folder is fingerprinted by reading a few megabytes, and a fine-tune of the same architecture
(every weight moved) differs in every sampled block.
"""

from __future__ import annotations

import hashlib
import os

from helpsteer_jax.storage.files import is_dir, open_file, size, walk_files

BLOCK = 1 << 16
SAMPLES = 8  # blocks read from inside each file besides its first and last
PREFIX = "sha256:"


def _short(digest: "hashlib._Hash") -> str:
  return PREFIX + digest.hexdigest()[:20]


def file_fingerprint(path: str | os.PathLike) -> str:
  """The hash of the whole content of `path`."""
  digest = hashlib.sha256()
  with open_file(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return _short(digest)


def text_fingerprint(text: str) -> str:
  """The hash of a string (a prompt, a conversation) as its UTF-8 bytes."""
  return _short(hashlib.sha256(text.encode("utf-8", "surrogatepass")))


def _sample_file(digest: "hashlib._Hash", path: str) -> None:
  length = size(path)
  digest.update(f"{length}\n".encode())
  offsets = {0, max(0, length - BLOCK)}
  offsets.update(length * i // (SAMPLES + 1) for i in range(1, SAMPLES + 1))
  with open_file(path, "rb") as f:
    for offset in sorted(offsets):
      f.seek(offset)
      digest.update(f.read(BLOCK))


def sampled_fingerprint(path: str | os.PathLike) -> str:
  """A fingerprint of a file, or of every file under a folder (names relative to it), that reads
  a fixed number of blocks per file whatever its size."""
  path = os.fspath(path)
  digest = hashlib.sha256()
  if not is_dir(path):
    _sample_file(digest, path)
    return _short(digest)
  prefix = path.rstrip("/") + "/"
  for file in sorted(walk_files(path)):
    name = file[len(prefix) :] if file.startswith(prefix) else os.path.basename(file)
    if name.startswith(".") or "/." in name:  # locks, write probes, temporary files
      continue
    digest.update(f"{name}\n".encode())
    _sample_file(digest, file)
  return _short(digest)
