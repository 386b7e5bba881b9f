"""Joining the run folders of one search run apart (prompt shards, or prompt ranges) into one.

The inputs are run folders, or parent folders whose `shard-I-of-N` subfolders are run folders.
Their configs must be the same but for `output_dir` and `prompts.shard`, and no prompt may be in
two of them: anything else is refused, naming what differs, before the output is touched. The
merged `results.jsonl` holds the records in the order of the run's prompt list (as one unsharded
run writes them), and `summary.json` and `distill.jsonl` are recomputed from those records
(`token_multiple` the ratio of the sums, never an average of the inputs' figures).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from helpsteer_jax import storage
from helpsteer_jax.data.prompt_sources import load_prompts
from helpsteer_jax.data.run_folder import claim_run_folder
from helpsteer_jax.scaling.results import (
  RESULTS,
  SUMMARY,
  read_records,
  unique_records,
  write_records,
  write_summary_files,
)
from helpsteer_jax.scaling.shards import shard_of_folder
from helpsteer_jax.storage import object_log

# Config fields that may differ between the inputs: where each wrote, which share it took, and how
# its processes found each other.
_PER_RUN_KEYS = ("output_dir", "prompts.shard")
_PER_RUN_PREFIXES = ("distributed.",)


def _per_run(key: str) -> bool:
  return key in _PER_RUN_KEYS or key.startswith(_PER_RUN_PREFIXES)


class MergeError(ValueError):
  """Inputs that cannot be merged, or an output that is not a merge's to overwrite."""


def _identity(folder: str) -> str:
  """What tells two names of one folder apart from two folders: the real path on disk (links
  resolved), the URL without a trailing slash in a bucket."""
  return folder.rstrip("/") if storage.is_remote(folder) else os.path.realpath(folder)


def _has_results(folder: str) -> bool:
  # In a bucket a run's log may be parts only, with no object at `results.jsonl` itself.
  return object_log.log_exists(storage.join(folder, RESULTS))


def run_folders(inputs: Sequence[str]) -> list[str]:
  """The run folders named by `inputs` (a parent folder stands for its `shard-I-of-N` folders)."""
  folders = []
  for path in inputs:
    if _has_results(path) or storage.is_file(storage.join(path, SUMMARY)):
      folders.append(path)
      continue
    by_name = {name: shard for name in storage.listdir(path) if (shard := shard_of_folder(name)) is not None}
    shards = [storage.join(path, name) for name in sorted(by_name, key=lambda n: by_name[n].index)]
    if not shards:
      raise MergeError(f"{path}: neither a run folder (no {RESULTS}) nor a folder of shard-I-of-N run folders")
    folders.extend(shards)
  resolved = [_identity(f) for f in folders]
  if len(set(resolved)) != len(resolved):
    raise MergeError(f"a folder is named twice among the inputs: {folders}")
  return folders


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flat(value, name + "."))
    else:
      out[name] = value
  return out


def _run_config(folder: str) -> dict[str, Any]:
  path = storage.join(folder, SUMMARY)
  if not storage.is_file(path):
    raise MergeError(
      f"{folder}: no {SUMMARY}; the run has not finished (rerun its command to resume "
      "it) or this is not a search's run folder"
    )
  summary = json.loads(storage.read_text(path))
  if "config" not in summary or "merged_from" in summary:
    raise MergeError(f"{folder}: {SUMMARY} is not a search run's (merge run folders, not merges)")
  return summary["config"]


def _check_same_config(folders: list[str], configs: list[dict[str, Any]]) -> None:
  first = {k: v for k, v in _flat(configs[0]).items() if not _per_run(k)}
  for folder, config in zip(folders[1:], configs[1:]):
    other = {k: v for k, v in _flat(config).items() if not _per_run(k)}
    differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
    if differ:
      shown = ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in differ[:6])
      raise MergeError(
        f"{folders[0]} and {folder} ran different configs ({shown}"
        f"{', ...' if len(differ) > 6 else ''}); only output_dir, prompts.shard and distributed may differ"
      )


def _check_same_models(records: list[dict[str, Any]], owner: dict[str, str]) -> None:
  """Shards of one run answer with the same weights: the configs name paths, and the records'
  model fingerprints tell whether the files behind the paths were the same (older runs' records
  name none)."""
  seen: dict[str, tuple[str, str]] = {}  # role -> (fingerprint, the record's folder)
  for record in records:
    for role, model in (record.get("models") or {}).items():
      where = owner[str(record["id"])]
      first = seen.setdefault(role, (model.get("fingerprint"), where))
      if first[0] != model.get("fingerprint"):
        raise MergeError(
          f"the {role} model differs between {first[1]} ({first[0]}) and {where} "
          f"({model.get('fingerprint')}): shards of one run use the same weights"
        )


def _check_output(output: str, folders: list[str]) -> None:
  if _identity(output) in {_identity(f) for f in folders}:
    raise MergeError(f"--output={output} is one of the inputs")
  summary = storage.join(output, SUMMARY)
  if _has_results(output):
    merged_before = False
    if storage.is_file(summary):
      merged_before = "merged_from" in json.loads(storage.read_text(summary))
    if not merged_before:
      raise MergeError(f"--output={output} holds a run's {RESULTS} that no merge wrote; give an empty or new folder")


def merge_runs(inputs: Sequence[str], output: str) -> dict[str, Any]:
  """Merges the run folders of `inputs` into `output`; returns the merged summary. An output a
  previous merge wrote is rewritten whole (everything in it is computed from the inputs)."""
  folders = run_folders(inputs)
  configs = [_run_config(f) for f in folders]
  _check_same_config(folders, configs)
  _check_output(output, folders)
  owner: dict[str, str] = {}
  records = []
  for folder in folders:
    for record in unique_records(read_records(folder)):
      rid = str(record["id"])
      if rid in owner:
        raise MergeError(f"prompt {rid!r} is in both {owner[rid]} and {folder}; shards of one run never share a prompt")
      owner[rid] = folder
      records.append(record)
  _check_same_models(records, owner)
  prompts = configs[0]["prompts"]
  items = load_prompts(
    prompts["source"], prompts["path"], prompts["limit"], prompts["start"], prompts.get("max_turns", 0)
  )
  # Records sort as one run writes them: turn by turn (multi-turn runs), each turn in the order
  # of the prompt list.
  order = {str(item.id): i for i, item in enumerate(items)}
  expected = sum(1 + len(item.later_turns) for item in items)
  question_of = {str(r["id"]): str(r.get("question_id") or r["id"]) for r in records}
  strangers = [rid for rid in owner if question_of[rid] not in order]
  if strangers:
    raise MergeError(
      f"prompts {strangers[:5]} are not in the run's prompt list ({prompts['source']} "
      f"{prompts['path']}); was the prompt file changed since?"
    )
  records.sort(key=lambda r: (r.get("turn") or 1, order[question_of[str(r["id"])]]))
  shards = [shard_of_folder(f) for f in folders]
  named = [s for s in shards if s is not None]
  counts = {s.count for s in named}
  missing_shards = []
  if len(counts) == 1 and len(named) == len(shards):
    count = counts.pop()
    missing_shards = sorted(set(range(count)) - {s.index for s in named})
  if missing_shards or len(records) < expected:
    logging.warning(
      "the merge holds %d of the run's %d prompts%s",
      len(records),
      expected,
      f" (shards {missing_shards} of {count} missing)" if missing_shards else "",
    )
  config = dict(configs[0], output_dir=output)
  config["prompts"] = dict(prompts, shard="")
  info = {
    "config": config,
    "merged_from": [storage.absolute(f) for f in folders],
    "missing_shards": missing_shards,
    "prompts_in_run": expected,
  }
  with claim_run_folder(output, what="merge"):
    write_records(records, storage.join(output, RESULTS))
    return write_summary_files(output, info, records)
