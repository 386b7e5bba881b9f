"""Prompt shards: independent replicas of one search, each over its share of the prompts.

`--config.prompts.shard=I/N` runs shard I of N (0 <= I < N): the prompts at positions I, I + N,
I + 2N, ... of the run's prompt list (after `start` and `limit`). Every N-th rather than
contiguous blocks, because benchmark files group their questions by category and length: strided
shards get a like mix and finish at about the same time. Each shard writes its own folder,
`<output_dir>/shard-I-of-N`, so replicas never share a folder; `python -m helpsteer_jax.merge`
joins them into one run folder (scaling/merge.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Optional, TypeVar

from helpsteer_jax import storage

T = TypeVar("T")
_FOLDER = re.compile(r"^shard-(\d+)-of-(\d+)$")


@dataclasses.dataclass(frozen=True)
class PromptShard:
  index: int  # I
  count: int  # N

  def __post_init__(self):
    if self.count < 1 or not 0 <= self.index < self.count:
      raise ValueError(f"prompts.shard={self.index}/{self.count}; expected I/N with 0 <= I < N")

  def select(self, items: Sequence[T]) -> list[T]:
    return list(items[self.index :: self.count])

  @property
  def folder_name(self) -> str:
    return f"shard-{self.index}-of-{self.count}"

  def __str__(self) -> str:
    return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Optional[PromptShard]:
  """ "I/N" -> PromptShard; "" -> None (the whole prompt list)."""
  text = (text or "").strip()
  if not text:
    return None
  match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
  if not match:
    raise ValueError(f"prompts.shard={text!r}; expected I/N (e.g. 0/4), or empty for all prompts")
  return PromptShard(int(match.group(1)), int(match.group(2)))


def run_folder(output_dir: str, shard: Optional[PromptShard]) -> str:
  """Where a run of `shard` writes: `output_dir` itself, or its `shard-I-of-N` subfolder."""
  return output_dir if shard is None else storage.join(output_dir, shard.folder_name)


def shard_of_folder(path: str) -> Optional[PromptShard]:
  """The shard a folder's name says it holds, if it is named `shard-I-of-N`."""
  match = _FOLDER.match(os.path.basename(os.path.normpath(path)))
  return None if match is None else PromptShard(int(match.group(1)), int(match.group(2)))
