"""What a model is, for a run's record of what produced it: its path and a content fingerprint.

The fingerprint (`storage.fingerprints.sampled_fingerprint`) reads each file's size, header and a
few blocks, so naming a 70B role costs milliseconds; the same weights copied to another folder
keep their fingerprint, and a fine-tune saved over the old folder changes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.model_pool import resolve_path
from helpsteer_jax.storage.fingerprints import sampled_fingerprint


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
  path: str  # as resolved ("" is the embedded SmolLM2's file)
  fingerprint: str

  def to_record(self) -> dict[str, Any]:
    return {"path": self.path, "fingerprint": self.fingerprint}


def model_identity(path: str) -> ModelIdentity:
  """The identity of the checkpoint at `path` (an HF folder, a .gguf, a bucket URL; "" = embedded),
  read afresh each call: a folder may be saved over within one process (a trainer's export)."""
  resolved = resolve_path(path)
  if not storage.exists(resolved):
    raise FileNotFoundError(f"{resolved}: no such model file or folder")
  return ModelIdentity(resolved, sampled_fingerprint(resolved))
