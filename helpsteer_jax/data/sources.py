"""Raw rows from a hub data set or local files, each with its location for error messages.

A source is either a Hugging Face hub data set (`datasets.load_dataset(name, subset, split=...)`,
the way users get the full HelpSteer data) or local files: one `.jsonl` / `.jsonl.gz` / `.json` /
`.parquet` file, or a folder of them (read in sorted name order, so row order is reproducible). A
file or folder may also be a bucket URL (gs://bucket/data).

Local JSON lines are parsed here rather than through `datasets`, so that a bad line is reported
by file and line number (and can be skipped and counted) instead of failing schema inference for
the whole file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any, Optional

import pyarrow.parquet as pq

from helpsteer_jax import storage
from helpsteer_jax.data.examples import BuildStats, DataError
from helpsteer_jax.data.jsonl import parse_jsonl_line
from helpsteer_jax.data.text_files import read_text, text_lines

LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
ON_ERROR = ("raise", "skip")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """Where rows come from. With `path` set the rows are local; otherwise `hub_name` is loaded.

  `data_files` is passed to `load_dataset` as is (e.g. `hub_name="json"` with local files, or a
  glob inside a hub repository); `data_dir` selects a folder of a hub repository (HelpSteer2's
  `preference`).
  """

  path: str = ""
  hub_name: str = ""
  subset: str = ""
  split: str = "train"
  data_dir: str = ""
  data_files: str = ""

  def describe(self) -> str:
    if self.path:
      return self.path
    parts = [self.hub_name]
    if self.subset:
      parts.append(self.subset)
    if self.data_dir:
      parts.append(f"data_dir={self.data_dir}")
    return f"{'/'.join(parts)}:{self.split}"


@dataclasses.dataclass(frozen=True)
class Row:
  where: str  # "file:line" (1-based line) or "name[row i]" (0-based index)
  data: Any  # the parsed row, normally a dict


def read_rows(spec: SourceSpec, *, on_error: str = "raise", stats: Optional[BuildStats] = None) -> Iterator[Row]:
  """Every row of the source in a fixed order.

  Unparseable lines raise `DataError` naming file and line (`on_error="raise"`) or are skipped
  and counted in `stats` under `skipped/bad_json` (`on_error="skip"`).
  """
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error={on_error!r}; expected one of {ON_ERROR}")
  stats = stats if stats is not None else BuildStats()
  if spec.path:
    for file in local_files(spec.path):
      yield from _read_local(file, on_error, stats)
  elif spec.hub_name:
    yield from _read_hub(spec)
  else:
    raise ValueError("a data source needs either `path` (local files) or `hub_name`")


def local_files(path: str) -> list[str]:
  """The data files of `path`: itself if it is a file, else its data files in sorted order."""
  path = os.fspath(path)
  if storage.is_file(path):
    if not path.endswith(LOCAL_SUFFIXES):
      raise DataError(f"{path}: unknown data file type; expected one of {LOCAL_SUFFIXES}")
    return [path]
  if not storage.is_dir(path):
    raise DataError(f"{path}: no such data file or folder")
  files = sorted(storage.join(path, name) for name in storage.listdir(path) if name.endswith(LOCAL_SUFFIXES))
  if not files:
    raise DataError(f"{path}: the folder has no data files ({', '.join(LOCAL_SUFFIXES)})")
  return files


def _read_local(file: str, on_error: str, stats: BuildStats) -> Iterator[Row]:
  if file.endswith(".parquet"):
    yield from _read_parquet(file)
  elif file.endswith(".json"):
    yield from _read_json_array(file)
  else:
    yield from _read_jsonl(file, on_error, stats)


def _read_jsonl(file: str, on_error: str, stats: BuildStats) -> Iterator[Row]:
  for line_no, line in text_lines(file):
    if not line.strip():
      continue
    try:
      data = parse_jsonl_line(file, line_no, line, objects=False)  # rows' fields are checked later
    except DataError as e:
      if on_error == "raise":
        raise
      stats.skip("bad_json", str(e))
      continue
    yield Row(f"{file}:{line_no}", data)


def _read_json_array(file: str) -> Iterator[Row]:
  """A `.json` file holding either a list of rows or JSON lines (some hubs name them `.json`)."""
  text = read_text(file)
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    data = None
  if isinstance(data, list):
    for i, row in enumerate(data):
      yield Row(f"{file}[row {i}]", row)
    return
  if isinstance(data, dict):
    yield Row(f"{file}[row 0]", data)
    return
  # Not a single JSON value: read it as JSON lines, which reports the bad line.
  yield from _read_jsonl(file, "raise", BuildStats())


def _read_parquet(file: str) -> Iterator[Row]:
  with contextlib.ExitStack() as stack:
    # pyarrow reads a local path itself; an object is read through a file handle of the store.
    source = stack.enter_context(storage.open_file(file, "rb")) if storage.is_remote(file) else file
    try:
      table = pq.ParquetFile(source)
    except Exception as e:  # pyarrow raises several types for a damaged file
      raise DataError(f"{file}: cannot read as parquet ({type(e).__name__}: {e})") from None
    index = 0
    for batch in table.iter_batches(batch_size=1024):
      for row in batch.to_pylist():
        yield Row(f"{file}[row {index}]", row)
        index += 1


def _read_hub(spec: SourceSpec) -> Iterator[Row]:
  """Rows of `datasets.load_dataset(...)`; the split is loaded as an Arrow table (memory-mapped)."""
  import datasets

  kwargs: dict[str, Any] = {"split": spec.split}
  if spec.data_dir:
    kwargs["data_dir"] = spec.data_dir
  if spec.data_files:
    kwargs["data_files"] = spec.data_files
  try:
    dataset = datasets.load_dataset(spec.hub_name, spec.subset or None, **kwargs)
  except Exception as e:  # network, missing config, ...: name the source whatever failed
    raise DataError(f"{spec.describe()}: cannot load the data set ({type(e).__name__}: {e})") from None
  name = spec.describe()
  for index, row in enumerate(dataset):
    yield Row(f"{name}[row {index}]", row)
