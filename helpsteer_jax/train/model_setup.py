"""Models and tokenizers for trainers, from the `model` block of an experiment config.

    config.model.preset        architecture preset (tiny, smollm2_135m, llama3_8b, ...) for random init
    config.model.overrides     LlamaConfig fields to change (dtype, remat_policy, vocab_size, ...)
    config.init_weights        HF folder or .gguf file to start from ('' = random init)
    config.tokenizer           tokenizer source when init_weights has none ('' = the embedded SmolLM2's)

Training keeps fp32 master weights (`param_dtype`) whatever the compute `dtype` (bf16 on accelerators).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from helpsteer_jax.checkpoints.embedded import EMBEDDED, embedded_model_path, resolve_model_path
from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from helpsteer_jax.checkpoints.pretrained import load_pretrained
from helpsteer_jax.checkpoints.tokenizers import load_llama3_tokenizer, load_tokenizer
from helpsteer_jax.models.config import LlamaConfig, get_preset
from helpsteer_jax.models.create import create_sharded_model
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
  overrides = dict(config.model.get("overrides", {}) or {})
  overrides.setdefault("param_dtype", "float32")
  return overrides


def model_config(config: ml_collections.ConfigDict) -> LlamaConfig:
  """The architecture a random init would use (the preset with its overrides)."""
  return get_preset(config.model.preset, **model_overrides(config))


def load_tokenizer_for(config: ml_collections.ConfigDict) -> Any:
  """`config.tokenizer` or the init weights' tokenizer: an HF folder, a .gguf file, 'llama3' (the
  Llama-3 tokenizer package), or by default the embedded SmolLM2's."""
  source = config.tokenizer or init_weights_path(config)
  if source == "llama3":
    return load_llama3_tokenizer()
  if source.endswith(".gguf"):
    return tokenizer_from_gguf(source)
  if source:
    tokenizer = load_tokenizer(source)
    if tokenizer is None:
      raise FileNotFoundError(f"{source} has no tokenizer files; set config.tokenizer")
    return tokenizer
  return tokenizer_from_gguf(embedded_model_path())


def init_weights_path(config: ml_collections.ConfigDict) -> str:
  """`config.init_weights` with 'embedded' resolved to the bundled SmolLM2 GGUF."""
  path = config.init_weights
  return resolve_model_path(path) if path == EMBEDDED else path  # "" here is random initialisation


def build_policy(config: ml_collections.ConfigDict, sharding: ShardingContext) -> Llama:
  """A causal LM: `init_weights` streamed onto the mesh, or randomly initialised on it."""
  if init_weights_path(config):
    model, _ = load_pretrained(
      init_weights_path(config), sharding=sharding, show_progress=config.progress, **model_overrides(config)
    )
    return model
  return create_sharded_model(model_config(config), sharding, seed=config.seed)
