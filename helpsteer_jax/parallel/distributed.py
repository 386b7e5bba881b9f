"""Multi-host start: one `jax.distributed.initialize` call, however the processes were launched.

Modes (config `distributed.mode`):
- `auto`: Cloud TPU pods and SLURM jobs with more than one task are detected and initialised from
  their environment (jax reads the TPU metadata / `SLURM_*` variables itself); processes started
  with `HELPSTEER_COORDINATOR` set (launch/local.sh --processes=N) run as `explicit`; a single
  process anywhere else is left alone.
- `tpu`, `slurm`: the same, but an error if the environment is not the one named.
- `explicit`: coordinator address, process count and id given in the config (or in the variables
  `HELPSTEER_COORDINATOR`, `HELPSTEER_NUM_PROCESSES`, `HELPSTEER_PROCESS_ID`): local multi-process
  tests and clusters without a scheduler jax knows.
- `none`: single process.
On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import jax

_MODES = ("auto", "tpu", "slurm", "explicit", "none")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  mode: str = "auto"
  coordinator_address: Optional[str] = None  # host:port of process 0
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  local_device_ids: Optional[tuple[int, ...]] = None


def _on_tpu_pod() -> bool:
  # Set on every worker of a multi-host Cloud TPU slice.
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def _in_slurm_job() -> bool:
  return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def initialize(settings: DistributedSettings = DistributedSettings()) -> str:
  """Starts the multi-process runtime if the mode asks for it; returns the mode actually used.

  Must run before any other jax call that touches devices.
  """
  mode = settings.mode
  if mode not in _MODES:
    raise ValueError(f"distributed.mode={mode!r}; expected one of {_MODES}")
  if mode == "auto":
    mode = (
      "tpu"
      if _on_tpu_pod()
      else "slurm"
      if _in_slurm_job()
      else "explicit"
      if os.environ.get("HELPSTEER_COORDINATOR")
      else "none"
    )
  if mode == "none":
    return mode
  if mode == "tpu" and not _on_tpu_pod():
    raise RuntimeError(
      "distributed.mode='tpu' but this is not a multi-host TPU worker (TPU_WORKER_HOSTNAMES lists one host or is unset)"
    )
  if mode == "slurm" and not _in_slurm_job():
    raise RuntimeError("distributed.mode='slurm' but SLURM_JOB_ID / SLURM_NTASKS>1 are not set")
  # gloo gives CPU devices cross-process collectives (multi-process tests, CPU clusters).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if mode in ("tpu", "slurm"):
    logging.info("jax.distributed.initialize from the %s environment", mode)
    jax.distributed.initialize()
    return mode
  address = settings.coordinator_address or os.environ.get("HELPSTEER_COORDINATOR")
  count = settings.num_processes if settings.num_processes is not None else _env_int("HELPSTEER_NUM_PROCESSES")
  index = settings.process_id if settings.process_id is not None else _env_int("HELPSTEER_PROCESS_ID")
  missing = [
    name
    for name, value in (("coordinator_address", address), ("num_processes", count), ("process_id", index))
    if value is None
  ]
  if missing:
    raise ValueError(
      f"distributed.mode='explicit' needs {missing} (in the config or the "
      "HELPSTEER_COORDINATOR / HELPSTEER_NUM_PROCESSES / HELPSTEER_PROCESS_ID variables)"
    )
  assert count is not None and index is not None  # `missing` named any that is None
  if not 0 <= index < count:
    raise ValueError(f"process_id={index} is outside [0, {count})")
  logging.info("jax.distributed.initialize(%s, num_processes=%d, process_id=%d)", address, count, index)
  jax.distributed.initialize(
    coordinator_address=address,
    num_processes=count,
    process_id=index,
    local_device_ids=list(settings.local_device_ids) if settings.local_device_ids else None,
  )
  return mode


def distributed_config() -> dict:
  """The config block every command that can span hosts takes (`--config.distributed.mode=...`);
  '' / 0 / -1 spell unset, since ml_collections fields keep their type."""
  return {"mode": "auto", "coordinator_address": "", "num_processes": 0, "process_id": -1}


def settings_from_config(config) -> DistributedSettings:
  """`DistributedSettings` from an ml_collections block (missing fields take the defaults)."""
  if config is None:
    return DistributedSettings()
  get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
  ids = get("local_device_ids", None)
  count, index = get("num_processes", None), get("process_id", None)
  # Configs spell "unset" as '' / 0 / -1 (ml_collections fields keep their type).
  return DistributedSettings(
    mode=get("mode", "auto"),
    coordinator_address=get("coordinator_address", None) or None,
    num_processes=count if count else None,
    process_id=index if index is not None and index >= 0 else None,
    local_device_ids=tuple(ids) if ids else None,
  )
