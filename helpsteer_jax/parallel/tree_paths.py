"""Names of pytree leaves: the keys of a `jax.tree_util` path (dict keys, sequence indices,
attribute names), so that state trees from nnx, optax and Orbax can be matched leaf by leaf."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def path_entry(entry: Any) -> Any:
  """One path element -> its key: `DictKey.key`, `SequenceKey.idx`, `GetAttrKey.name`."""
  for attr in ("key", "idx", "name"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def path_key(path: Sequence[Any]) -> tuple:
  """A whole path -> the tuple of its keys, as they are (ints stay ints)."""
  return tuple(path_entry(k) for k in path)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
  """A whole path -> its keys as strings (how Orbax names nested entries)."""
  return tuple(str(path_entry(k)) for k in path)
