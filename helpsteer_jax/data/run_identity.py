"""What produced a run folder, and the refusal to resume it as something else.

Every run folder (a search's output_dir, an evaluation's or a training run's workdir, an
annotation's output) holds `run_identity.json`: the resolved config, each model's path and
fingerprint (`checkpoints/identity.py`) and each input file's fingerprint. A rerun into the folder
compares what it is about to do with that record before any model loads:

- a field that changes results (a sampling value, a model's weights, the prompt file, the
  learning rate) refuses the rerun, naming every differing field with both values;
- a field in `FieldRules.extends` only extends the run (more steps, more prompts) and a field in
  `FieldRules.ignores` changes where or how fast it runs, not what it computes (the output path,
  the mesh, a bucket's URL): both are allowed and logged;
- a model that moved (another path, the same fingerprint) is the same model.

`resume="force"` (`--config.resume=force`, `--resume=force`) continues anyway and logs each
overridden field: the folder then holds work of both configs, by the user's choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional

from helpsteer_jax import storage

logger = logging.getLogger(__name__)

IDENTITY_FILE = "run_identity.json"
RESUME_MODES = ("check", "force")


class RunMismatch(ValueError):
  """A rerun differs from the run on disk in a field that changes results; the message names
  each field with both values."""


@dataclasses.dataclass(frozen=True)
class RunIdentity:
  what: str  # "scaling search", "evaluation", "annotation", "training"
  config: dict[str, Any]  # the resolved config as JSON values
  models: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # role -> path, fingerprint
  inputs: dict[str, str] = dataclasses.field(default_factory=dict)  # input name -> fingerprint

  def to_record(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_record(cls, record: dict[str, Any]) -> "RunIdentity":
    return cls(
      str(record.get("what", "")),
      dict(record.get("config") or {}),
      dict(record.get("models") or {}),
      dict(record.get("inputs") or {}),
    )


@dataclasses.dataclass(frozen=True)
class FieldRules:
  """Which differing fields a rerun may have. Names are dotted paths (`prompts.limit`,
  `models.policy`); a name also covers the fields under it."""

  extends: tuple[str, ...] = ()  # fields that only extend the run
  ignores: tuple[str, ...] = ()  # fields that change where or how fast it runs, not its results

  def kind_of(self, name: str) -> str:
    if any(_covers(rule, name) for rule in self.extends):
      return "extends"
    if any(_covers(rule, name) for rule in self.ignores):
      return "ignored"
    return "refused"


def _covers(rule: str, name: str) -> bool:
  return name == rule or name.startswith(rule + ".")


def json_values(values: Any) -> Any:
  """`values` as plain JSON (tuples as lists; anything unusual as its string)."""
  return json.loads(json.dumps(values, default=str))


def _flat(values: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
  if isinstance(values, dict) and values:
    for key, value in values.items():
      _flat(value, f"{prefix}.{key}" if prefix else str(key), out)
  else:
    out[prefix] = values
  return out


def _comparable(identity: RunIdentity) -> dict[str, Any]:
  """The fields compared: the config's, each model's fingerprint and each input's."""
  out = _flat(json_values(identity.config), "config", {})
  out = {name[len("config.") :]: value for name, value in out.items()}
  for role, model in identity.models.items():
    out[f"models.{role}"] = model.get("fingerprint")
  for name, fingerprint in identity.inputs.items():
    out[f"inputs.{name}"] = fingerprint
  return out


@dataclasses.dataclass(frozen=True)
class Difference:
  name: str
  before: Any
  now: Any
  kind: str  # extends | ignored | refused

  def line(self, where: str) -> str:
    return f"{self.name}: {_show(self.before)} in {where}, {_show(self.now)} now"


_ABSENT = "(absent)"


def _show(value: Any) -> str:
  return value if value == _ABSENT else json.dumps(value)


def differences(before: RunIdentity, now: RunIdentity, rules: FieldRules) -> list[Difference]:
  """Every field whose value differs, with its kind under `rules`."""
  old, new = _comparable(before), _comparable(now)
  out = []
  for name in sorted(set(old) | set(new)):
    a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
    if a != b:
      out.append(Difference(name, a, b, rules.kind_of(name)))
  return out


def check_resume_mode(resume: str) -> str:
  if resume not in RESUME_MODES:
    raise ValueError(f"resume={resume!r}; expected one of {RESUME_MODES}")
  return resume


def identity_file(folder: str | os.PathLike) -> str:
  """Where a run folder records what produced it."""
  return storage.join(folder, IDENTITY_FILE)


def read_identity(path: str) -> Optional[RunIdentity]:
  """The identity recorded at `path` (a folder's `identity_file`), or None where there is none."""
  if not storage.exists(path):
    return None
  try:
    return RunIdentity.from_record(json.loads(storage.read_text(path)))
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
    raise RunMismatch(
      f"{path}: unreadable ({e}); it records what produced the run beside it, so "
      "the rerun cannot be checked against it: restore it, or choose another "
      "output"
    ) from None


def check_rerun(
  folder: str | os.PathLike,
  identity: RunIdentity,
  rules: FieldRules,
  resume: str = "check",
  has_work: bool = True,
  record: Optional[str] = None,
  force_flag: str = "--config.resume=force",
) -> list[Difference]:
  """Compares `identity` with the one recorded for `folder` (at `record`, by default its
  `identity_file`) and raises `RunMismatch` on a field that changes results (unless
  `resume="force"`); logs the allowed differences and returns them all. `has_work`: whether the
  output holds results yet (one without them may be reused). `force_flag`: the override, as the
  command's user writes it."""
  check_resume_mode(resume)
  where = record or identity_file(folder)
  before = read_identity(where)
  if before is None or not has_work:
    return []
  found = differences(before, identity, rules)
  for d in found:
    if d.kind != "refused":
      logger.info(
        "rerun of %s: %s (%s)",
        folder,
        d.line("the run on disk"),
        "extends the run" if d.kind == "extends" else "does not change results",
      )
  refused = [d for d in found if d.kind == "refused"]
  if refused and resume == "force":
    for d in refused:
      logger.warning("%s: continuing %s although %s", force_flag, folder, d.line(where))
  elif refused:
    lines = "\n  ".join(d.line(where) for d in refused)
    raise RunMismatch(
      f"{folder} holds a run ({before.what or 'unnamed'}) that differs from this one in "
      f"{len(refused)} field{'s' if len(refused) > 1 else ''} that change{'' if len(refused) > 1 else 's'} "
      f"results:\n  {lines}\nResuming would mix the two runs in one output: choose another "
      f"output, or pass {force_flag} to continue anyway."
    )
  return found


def write_identity(folder: str | os.PathLike, identity: RunIdentity, record: Optional[str] = None) -> None:
  """Records `identity` for `folder` (at `record`, by default its `identity_file`), atomically: a
  reader sees the old record or the new."""
  storage.write_atomic(
    record or identity_file(folder), json.dumps(json_values(identity.to_record()), indent=2, sort_keys=True) + "\n"
  )


def check_and_record(
  folder: str | os.PathLike,
  identity: RunIdentity,
  rules: FieldRules,
  resume: str = "check",
  has_work: bool = True,
  record: Optional[str] = None,
  force_flag: str = "--config.resume=force",
) -> list[Difference]:
  """`check_rerun`, then the record of this run written over the old one."""
  found = check_rerun(folder, identity, rules, resume, has_work, record, force_flag)
  write_identity(folder, identity, record)
  return found
