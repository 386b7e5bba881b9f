"""The one loader of every entry point that loads models by path (scale, evaluate, annotate, chat).

Each checkpoint is loaded once, whatever number of roles it plays (the policy as feedback writer
and judge, the answer model as a local judge), keyed by what it is: a causal LM or a reward model,
its resolved path, its dtype and, for a reward model stored as a causal LM, its logit index.
An empty path is the embedded SmolLM2-135M-Instruct. Models are placed on the sharding of the
config's `mesh` block, or on one device when it asks for one.

A model's key (`lm_key`, `rm_key`) names it for the search's roles, which share an engine per key.
`tokenizer` and `max_positions` read a checkpoint's tokenizer and context without its weights, and
`free` drops every model loaded, for the staged search's one model at a time.
"""

from __future__ import annotations

from typing import Any, Optional

from ml_collections import ConfigDict

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.embedded import resolve_model_path
from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from helpsteer_jax.checkpoints.tokenizers import load_tokenizer
from helpsteer_jax.parallel.mesh_config import is_one_device, sharding_from_mesh_config


def resolve_path(path: str) -> str:
  """`path`, or the embedded SmolLM2 GGUF for an empty one or "embedded"."""
  return resolve_model_path(path)


def _dtype_overrides(param_dtype: str) -> dict[str, Any]:
  return {"param_dtype": param_dtype, "dtype": param_dtype} if param_dtype else {}


class ModelPool:
  """(model, tokenizer) pairs by checkpoint, loaded on first use."""

  def __init__(self, mesh: Optional[ConfigDict] = None):
    self.sharding = None
    if mesh is not None and not is_one_device(mesh):
      self.sharding = sharding_from_mesh_config(mesh)
    self._models: dict[str, tuple[Any, Any]] = {}
    self._tokenizers: dict[str, Any] = {}

  @staticmethod
  def lm_key(path: str, param_dtype: str = "") -> str:
    return f"lm:{resolve_path(path)}:{param_dtype}"

  @staticmethod
  def rm_key(path: str, param_dtype: str = "", logit_index: Optional[int] = None) -> str:
    return f"rm:{path}:{param_dtype}:{logit_index}"

  def loaded(self) -> list[str]:
    """The keys of the models held now."""
    return list(self._models)

  def free(self) -> None:
    """Drops every model held; its device memory is released once no one else refers to it."""
    self._models.clear()

  def causal_lm(self, path: str, param_dtype: str = "") -> tuple[Any, Any]:
    """A causal LM (HF folder or GGUF) with its tokenizer; a folder without one is refused."""
    from helpsteer_jax.checkpoints.pretrained import load_pretrained

    key, resolved = self.lm_key(path, param_dtype), resolve_path(path)
    if key not in self._models:
      model, tokenizer = load_pretrained(resolved, sharding=self.sharding, **_dtype_overrides(param_dtype))
      if tokenizer is None:
        raise ValueError(f"{resolved} has no tokenizer files; every role and judge needs a tokenizer")
      self._models[key] = (model, self._tokenizers.setdefault(resolved, tokenizer))
    return self._models[key]

  def tokenizer(self, path: str) -> Any:
    """The tokenizer of a causal LM's checkpoint (HF folder or GGUF), without its weights; a
    folder without one is refused."""
    resolved = resolve_path(path)
    if resolved not in self._tokenizers:
      if storage.is_file(resolved) and resolved.endswith(".gguf"):
        tokenizer = tokenizer_from_gguf(resolved)
      else:
        tokenizer = load_tokenizer(resolved)
      if tokenizer is None:
        raise ValueError(f"{resolved} has no tokenizer files; every role and judge needs a tokenizer")
      self._tokenizers[resolved] = tokenizer
    return self._tokenizers[resolved]

  def max_positions(self, path: str) -> int:
    """The context of a causal LM's checkpoint, read from its config without its weights."""
    resolved = resolve_path(path)
    if storage.is_file(resolved) and resolved.endswith(".gguf"):
      from helpsteer_jax.checkpoints.gguf import config_from_gguf

      return config_from_gguf(resolved).max_position_embeddings
    from helpsteer_jax.checkpoints.hf import read_config

    return read_config(resolved).max_position_embeddings

  def reward_model(
    self, path: str, param_dtype: str = "", logit_index: Optional[int] = None, tokenizer: Any = None
  ) -> tuple[Any, Any]:
    """A reward model folder (`logit_index` for one stored as a causal LM, NVIDIA's Select: 0)
    with its tokenizer, or `tokenizer` when the folder has none."""
    from helpsteer_jax.checkpoints.reward import load_reward_model

    if not path:
      raise ValueError("a reward model needs a folder path (the embedded model is a causal LM)")
    key = self.rm_key(path, param_dtype, logit_index)
    if key not in self._models:
      model, own = load_reward_model(
        path, logit_index=logit_index, sharding=self.sharding, **_dtype_overrides(param_dtype)
      )
      if own is None and tokenizer is None:
        raise ValueError(f"{path} has no tokenizer files; the reward model needs a tokenizer")
      self._models[key] = (model, own or tokenizer)
    return self._models[key]
