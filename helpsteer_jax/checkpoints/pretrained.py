"""`load_pretrained` / `save_pretrained`: one entry for HF folders and GGUF files."""

from __future__ import annotations

import os
from typing import Any, Optional

import jax

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.embedded import EMBEDDED, resolve_model_path
from helpsteer_jax.checkpoints.gguf import load_gguf
from helpsteer_jax.checkpoints.hf import load_hf_model, save_hf_model
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.checkpoints.tokenizers import load_tokenizer, save_tokenizer, stop_token_ids
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext


def load_pretrained(
  path: str,
  *,
  sharding: Optional[ShardingContext] = None,
  show_progress: bool = True,
  **config_overrides: Any,
) -> tuple[Llama, Any]:
  """(model, tokenizer) from an HF folder (config.json + safetensors) or a .gguf file;
  "embedded" is the bundled SmolLM2-135M-Instruct.

  Tensors stream one at a time onto `sharding` (one device when None). `config_overrides` replace
  config fields, e.g. `param_dtype="bfloat16"`, `scan_layers=False`, `remat_policy="full"`.
  The tokenizer is None for an HF folder without tokenizer files.
  """
  path = os.fspath(path)
  if path == EMBEDDED:
    path = resolve_model_path(path)
  if storage.is_file(path) and path.endswith(".gguf"):
    return load_gguf(path, sharding=sharding, show_progress=show_progress, **config_overrides)
  if storage.is_dir(path):
    tokenizer = load_tokenizer(path)  # first: a tokenizer of another model fails before the weights load
    model = load_hf_model(path, sharding=sharding, show_progress=show_progress, **config_overrides)
    return model, tokenizer
  if not storage.exists(path):
    raise CheckpointError(f"{path}: no such file or directory")
  raise CheckpointError(f"{path}: expected an HF checkpoint folder or a .gguf file")


def save_pretrained(
  model: Llama,
  tokenizer: Any,
  out_dir: str,
  *,
  max_shard_size: int | str = "5GB",
  dtype: Optional[str] = None,
  show_progress: bool = True,
) -> None:
  """Writes an HF folder (safetensors shards, config, generation config, tokenizer) that
  transformers and vLLM load. In multi-process runs every process calls it; process 0 writes."""
  stops = stop_token_ids(tokenizer) if tokenizer is not None else ()
  save_hf_model(
    model, out_dir, max_shard_size=max_shard_size, dtype=dtype, show_progress=show_progress, eos_token_ids=stops
  )
  if tokenizer is not None and jax.process_index() == 0:
    save_tokenizer(tokenizer, out_dir)
