"""The one loader of every entry point that loads models by path (scale, evaluate, annotate, chat).

Each checkpoint is loaded once, whatever number of roles it plays (the policy as feedback writer
and judge, the answer model as a local judge), keyed by what it is: a causal LM or a reward model,
its resolved path, its dtype and, for a reward model stored as a causal LM, its logit index.
An empty path is the embedded SmolLM2-135M-Instruct. Models are placed on the sharding of the
config's `mesh` block, or on one device when it asks for one.
"""

from __future__ import annotations

from typing import Any, Optional

from ml_collections import ConfigDict

from helpsteer_jax.parallel.mesh_config import is_one_device, sharding_from_mesh_config


def resolve_path(path: str) -> str:
  """`path`, or the embedded SmolLM2 GGUF for an empty one."""
  if path:
    return path
  from helpsteer_jax.checkpoints.embedded import embedded_model_path

  return embedded_model_path()


def _dtype_overrides(param_dtype: str) -> dict[str, str]:
  return {"param_dtype": param_dtype, "dtype": param_dtype} if param_dtype else {}


class ModelPool:
  """(model, tokenizer) pairs by checkpoint, loaded on first use."""

  def __init__(self, mesh: Optional[ConfigDict] = None):
    self.sharding = None
    if mesh is not None and not is_one_device(mesh):
      self.sharding = sharding_from_mesh_config(mesh)
    self._models: dict[tuple, tuple[Any, Any]] = {}

  def causal_lm(self, path: str, param_dtype: str = "") -> tuple[Any, Any]:
    """A causal LM (HF folder or GGUF) with its tokenizer; a folder without one is refused."""
    from helpsteer_jax.checkpoints.pretrained import load_pretrained

    key = ("lm", resolve_path(path), param_dtype)
    if key not in self._models:
      model, tokenizer = load_pretrained(key[1], sharding=self.sharding, **_dtype_overrides(param_dtype))
      if tokenizer is None:
        raise ValueError(f"{key[1]} has no tokenizer files; every role and judge needs a tokenizer")
      self._models[key] = (model, tokenizer)
    return self._models[key]

  def reward_model(self, path: str, param_dtype: str = "", logit_index: Optional[int] = None,
                   tokenizer: Any = None) -> tuple[Any, Any]:
    """A reward model folder (`logit_index` for one stored as a causal LM, NVIDIA's Select: 0)
    with its tokenizer, or `tokenizer` when the folder has none."""
    from helpsteer_jax.checkpoints.reward import load_reward_model

    if not path:
      raise ValueError("a reward model needs a folder path (the embedded model is a causal LM)")
    key = ("rm", path, param_dtype, logit_index)
    if key not in self._models:
      model, own = load_reward_model(path, logit_index=logit_index, sharding=self.sharding,
                                     **_dtype_overrides(param_dtype))
      if own is None and tokenizer is None:
        raise ValueError(f"{path} has no tokenizer files; the reward model needs a tokenizer")
      self._models[key] = (model, own or tokenizer)
    return self._models[key]
