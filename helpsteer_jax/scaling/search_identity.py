"""What a search folder was produced by (`data/run_identity.py`), and the per-prompt check that a
resumed run answers the same questions under the same ids.

The folder's `run_identity.json` names the resolved config, each role's model (path and
fingerprint) and the prompt file; every record names its models and its question's fingerprint.
A rerun refuses, before any model loads, a config field or model that changes results, and a
prompt whose id is on disk with another text. More prompts (a larger `prompts.limit`, rows
appended to the file, more turns) extend the run.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from ml_collections import ConfigDict

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.identity import model_identity
from helpsteer_jax.data.run_identity import FieldRules, RunIdentity, RunMismatch, json_values
from helpsteer_jax.remote.endpoint import endpoint_name
from helpsteer_jax.scaling.config import POLICY, ROLE_BLOCKS, role_checkpoint, role_endpoint
from helpsteer_jax.storage.fingerprints import file_fingerprint, text_fingerprint

logger = logging.getLogger(__name__)

SEARCH_RULES = FieldRules(
  extends=("prompts.limit", "prompts.start", "prompts.max_turns", "inputs.prompts"),
  # Where the run writes and how it is scheduled over the devices: the engines give every
  # sample the same tokens whatever their slots, prefix table, schedule or mesh (tests/scaling/test_scale_staged.py).
  # A role's path may move; its fingerprint (models.<role>) is what is compared.
  ignores=(
    "output_dir",
    "resume",
    "label",
    "served_model_name",
    "mesh",
    "distributed",
    "prompts.path",
    "prompts_per_batch",
    "prompts_in_flight",
    "search.schedule",
    "search.memory_fraction",
    "search.batch_size",
    "search.prefix_entries",
  )
  + tuple(f"{block}.path" for block in ROLE_BLOCKS.values()),
)


def role_models(config: ConfigDict) -> dict[str, dict[str, str]]:
  """Each role's model identity (path and fingerprint), by role: policy, feedback, edit and the
  selector's model (a judge's causal LM or a reward model); read from file headers, not loaded."""
  paths = {name: role_checkpoint(config, name)[0] for name in ("policy", "feedback", "edit")}
  remote = {name: role_endpoint(config, name) for name in ("policy", "feedback", "edit")}
  kind = config.selector.kind
  if kind == "generative_judge":
    paths["selector"] = role_checkpoint(config, "judge")[0]
    remote["selector"] = role_endpoint(config, "judge")
  elif kind == "reward_model":
    own = config.selector.get("endpoint")
    remote["selector"] = own if own is not None and own.kind == "openai" else None
    if config.selector.path not in ("", POLICY) or remote["selector"] is not None:
      paths["selector"] = config.selector.path
  out = {}
  for name, path in paths.items():
    endpoint = remote.get(name)
    if endpoint is not None:
      # A served model is named by its URL and model: what the server holds cannot be read here.
      served = endpoint_name(endpoint.base_url, endpoint.model)
      out[name] = {"path": served, "fingerprint": served}
    else:
      out[name] = model_identity(path).to_record()
  return out


def search_identity(config: ConfigDict, models: dict[str, dict[str, str]]) -> RunIdentity:
  inputs = {}
  if config.prompts.source == "jsonl" and config.prompts.path:
    inputs["prompts"] = file_fingerprint(config.prompts.path)
  return RunIdentity("scaling search", json_values(config.to_dict()), models, inputs)


def question_fingerprint(item) -> str:
  """The fingerprint of a question as the prompt file gives it: its first turn's conversation and
  the user turns after it (a later turn's record carries its question's fingerprint)."""
  return text_fingerprint(json.dumps([item.conversation, list(item.later_turns)], sort_keys=True))


def has_work(folder: str, done_ids: set[str]) -> bool:
  """Whether the folder holds any result of a run: a record or a staged run's stage files."""
  from helpsteer_jax.scaling.staged import STAGE_DIR

  stages = storage.join(folder, STAGE_DIR)
  return bool(done_ids) or (storage.is_dir(stages) and bool(storage.listdir(stages)))


def check_questions(records: Iterable[dict[str, Any]], fingerprints: dict[str, str], folder: str, resume: str) -> None:
  """Refuses a rerun whose prompts give an id on disk another question (`resume="force"` logs
  them instead). `fingerprints`: each record id's question fingerprint in this run."""
  changed = [
    str(r["id"])
    for r in records
    if r.get("prompt_fingerprint")
    and str(r["id"]) in fingerprints
    and r["prompt_fingerprint"] != fingerprints[str(r["id"])]
  ]
  if not changed:
    return
  what = f"{len(changed)} prompt id{'s' if len(changed) > 1 else ''} ({', '.join(changed[:8])})"
  if resume == "force":
    logger.warning("resume=force: %s of %s have another text now; their old records stay", what, folder)
    return
  raise RunMismatch(
    f"{folder} holds records of {what} whose question differs from the prompts of "
    "this run: the same ids name other questions. Choose another output folder, or "
    "pass --config.resume=force to keep the old records."
  )
