"""Hugging Face checkpoints: a folder with config.json and one or many safetensors shards, in and out."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Optional

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.param_map import TensorMapping, llama_tensor_mappings
from helpsteer_jax.checkpoints.safetensors_io import (
  CheckpointError,
  PendingTensor,
  SafetensorsFile,
  write_safetensors,
)
from helpsteer_jax.checkpoints.streaming import build_model, variable_paths
from helpsteer_jax.models.config import LlamaConfig, from_hf_dict, to_hf_dict
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SafetensorsFolder:
  """The tensors of an HF folder: `model.safetensors`, or shards listed by the index file."""

  def __init__(self, folder: str):
    self.folder = folder
    index_path = storage.join(folder, INDEX_NAME)
    if storage.is_file(index_path):
      try:
        with storage.open_file(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
      except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
          f"{index_path}: not a valid safetensors index, expected a JSON object with a "
          f"'weight_map' of tensor name -> file name ({e!r})"
        ) from None
      for name in files:
        if not isinstance(name, str) or not storage.is_file(storage.join(folder, name)):
          raise CheckpointError(
            f"{index_path}: lists shard {name!r}, which is not in {folder} (an incomplete download or copy?)"
          )
    elif storage.is_file(storage.join(folder, SINGLE_NAME)):
      weight_map, files = None, [SINGLE_NAME]
    else:
      files = sorted(storage.as_path(p).name for p in storage.glob(folder, "*.safetensors"))
      weight_map = None
      if not files:
        raise CheckpointError(
          f"{folder}: no {SINGLE_NAME}, {INDEX_NAME} or *.safetensors files "
          "(PyTorch .bin checkpoints are not read; convert them to safetensors)"
        )
    self.files = {name: SafetensorsFile(storage.join(folder, name)) for name in files}
    self._owner: dict[str, SafetensorsFile] = {}
    for file in self.files.values():
      for name in file.keys():
        if name in self._owner:
          raise CheckpointError(
            f"{file.path}: tensor {name!r} is also in {self._owner[name].path}; "
            "expected every tensor in exactly one shard"
          )
        self._owner[name] = file
    if weight_map is not None:
      for name, file_name in weight_map.items():
        if self._owner.get(name) is not self.files[file_name]:
          raise CheckpointError(f"{index_path}: tensor {name!r} is listed in {file_name}, which does not hold it")

  def names(self) -> list[str]:
    return list(self._owner)

  def read(self, name: str) -> np.ndarray:
    return self._owner[name].read(name)

  def shape(self, name: str) -> tuple[int, ...]:
    """The shape a tensor's header declares (checked before any data is read)."""
    return self._owner[name].shape(name)

  def where(self, name: str) -> str:
    return self._owner[name].path if name in self._owner else self.folder


def read_config(folder: str, **overrides: Any) -> LlamaConfig:
  path = storage.join(folder, "config.json")
  if not storage.is_file(path):
    raise CheckpointError(f"{path}: file not found (an HF checkpoint folder needs config.json)")
  try:
    with storage.open_file(path) as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(hf, dict):
    raise CheckpointError(f"{path}: expected a JSON object, got {type(hf).__name__}")
  if "param_dtype" not in overrides:
    stored = hf.get("torch_dtype") or hf.get("dtype")
    if stored in ("float32", "bfloat16", "float16"):
      overrides["param_dtype"] = stored
      overrides.setdefault("dtype", stored)
  try:
    return from_hf_dict(hf, source=path, **overrides)
  except (ValueError, TypeError) as e:  # also the config's own checks, which do not know the file
    message = str(e)
    raise CheckpointError(message if message.startswith(path) else f"{path}: {message}") from None


def load_hf_model(
  folder: str, sharding: Optional[ShardingContext] = None, show_progress: bool = True, **overrides: Any
) -> Llama:
  """Streams an HF Llama checkpoint folder into a (sharded) model. `overrides` change the config."""
  if not storage.is_dir(folder):
    problem = "is a file" if storage.exists(folder) else "no such directory"
    raise CheckpointError(f"{folder}: {problem}; expected an HF checkpoint folder (config.json and *.safetensors)")
  config = read_config(folder, **overrides)
  source = SafetensorsFolder(folder)
  return build_model(config, source, llama_tensor_mappings(config), sharding, what=folder, show_progress=show_progress)


def _host_value(value: jax.Array) -> np.ndarray:
  if not isinstance(value, jax.Array):  # e.g. a state edited with numpy values
    return np.asarray(value)
  if not value.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))
  return np.asarray(jax.device_get(value))


def _parse_size(size: int | str) -> int:
  if isinstance(size, int):
    return size
  units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
  text = size.strip().upper()
  for unit, scale in sorted(units.items(), key=lambda kv: -len(kv[0])):
    if text.endswith(unit):
      return int(float(text[: -len(unit)]) * scale)
  return int(text)


def write_model_tensors(
  model: Llama | RewardModel,
  mappings: list[TensorMapping],
  out_dir: str,
  dtype: str,
  max_shard_size: int | str,
  show_progress: bool,
) -> None:
  """safetensors shards (and an index when more than one) of `model`'s tensors under `mappings`.

  Tensors are gathered to the host one at a time; in a multi-process run every process must call
  this (the gathers are collective) and only process 0 writes.
  """
  scan_layers = model.config.scan_layers
  np_dtype = np.dtype(jax.numpy.dtype(dtype))
  variables = variable_paths(nnx.state(model))
  writer = jax.process_index() == 0
  if writer:
    storage.makedirs(out_dir)

  def fetch(m: TensorMapping) -> np.ndarray:
    value = variables[m.variable_path(scan_layers)].get_value()
    if m.layer is not None and scan_layers:
      value = value[m.layer]
    return m.to_hf(_host_value(value)).astype(np_dtype)

  limit = _parse_size(max_shard_size)
  shards: list[list[PendingTensor]] = [[]]
  shard_bytes = 0
  for m in mappings:
    nbytes = int(np.prod(m.hf_shape)) * np_dtype.itemsize
    if shards[-1] and shard_bytes + nbytes > limit:
      shards.append([])
      shard_bytes = 0
    shards[-1].append((m.hf_name, m.hf_shape, np_dtype, functools.partial(fetch, m)))
    shard_bytes += nbytes

  progress = tqdm(
    total=len(mappings),
    desc=f"saving {out_dir}",
    unit="tensor",
    disable=not (show_progress and writer),
    mininterval=2.0,
  )
  names = (
    [SINGLE_NAME]
    if len(shards) == 1
    else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  )
  weight_map: dict[str, str] = {}
  for name, tensors in zip(names, shards):
    counted = [(n, s, d, (lambda f=f: (progress.update(1), f())[1])) for n, s, d, f in tensors]
    if writer:
      write_safetensors(storage.join(out_dir, name), counted, metadata={"format": "pt"})
    else:
      for *_, f in counted:
        f()  # take part in the collective gathers
    weight_map.update({n: name for n, *_ in tensors})
  progress.close()
  if writer and len(shards) > 1:
    total = sum(int(np.prod(s)) * np_dtype.itemsize for tensors in shards for _, s, _, _ in tensors)
    storage.write_atomic(
      storage.join(out_dir, INDEX_NAME),
      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2),
    )


def save_hf_model(
  model: Llama,
  out_dir: str,
  max_shard_size: int | str = "5GB",
  dtype: Optional[str] = None,
  show_progress: bool = True,
  eos_token_ids: tuple[int, ...] = (),
) -> None:
  """Writes config.json, generation_config.json and safetensors shards (with an index when > 1).

  Tensors are gathered to the host one at a time; in a multi-process run every process must call
  this (the gathers are collective) and only process 0 writes. `eos_token_ids` stand in for a
  config that names none (a randomly initialised preset), so that transformers' `generate` stops
  at the end of a turn.
  """
  config = model.config
  if not config.eos_token_id and eos_token_ids:
    config = dataclasses.replace(config, eos_token_id=tuple(eos_token_ids))
  dtype = dtype or config.param_dtype
  write_model_tensors(model, llama_tensor_mappings(config), out_dir, dtype, max_shard_size, show_progress)
  if jax.process_index() != 0:
    return
  storage.write_atomic(
    storage.join(out_dir, "config.json"), json.dumps(to_hf_dict(config, torch_dtype=dtype), indent=2)
  )
  generation: dict[str, int | list[int] | None] = {"bos_token_id": config.bos_token_id}
  if config.eos_token_id:
    eos = list(config.eos_token_id)
    generation["eos_token_id"] = eos[0] if len(eos) == 1 else eos
  storage.write_atomic(storage.join(out_dir, "generation_config.json"), json.dumps(generation, indent=2))
