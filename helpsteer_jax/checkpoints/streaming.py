"""Builds a model from a tensor source one tensor at a time, straight onto the target sharding.

Nothing is materialised whole on the host: the model's parameter tree comes from `nnx.eval_shape`,
each checkpoint tensor is read, converted and placed on its devices before the next one is read,
and stacked (scanned) layer parameters are preallocated on their devices and filled layer by layer
with a donated in-place update. Host memory therefore peaks near the largest single tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from helpsteer_jax.checkpoints.param_map import IGNORED_HF_TENSOR_SUFFIXES, TensorMapping
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext


class TensorSource(Protocol):
  """Named host tensors in HF layout (a safetensors folder, a GGUF file, ...)."""

  def names(self) -> Sequence[str]: ...

  def read(self, name: str) -> np.ndarray: ...

  def where(self, name: str) -> str:
    """The file holding `name`, for error messages."""
    ...


def _key(entry: Any) -> Any:
  for attr in ("key", "idx", "name"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def variable_paths(state: nnx.State) -> dict[tuple, nnx.Variable]:
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {tuple(_key(k) for k in path): var for path, var in leaves}


def target_sharding(variable: nnx.Variable, sharding: Optional[ShardingContext], drop_leading: bool = False):
  shape = tuple(variable.value.shape)
  axes = tuple(variable.get_metadata()["logical_axes"])
  if drop_leading:
    shape, axes = shape[1:], axes[1:]
  if sharding is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return sharding.sharding(axes, shape)


def _put(host: np.ndarray, target) -> jax.Array:
  """Places a host array on `target`; each process contributes only its addressable shards."""
  return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def check_tensor_names(source: TensorSource, mappings: list[TensorMapping], what: str) -> None:
  expected = [m.hf_name for m in mappings]
  available = set(source.names())
  missing = [n for n in expected if n not in available]
  if missing:
    raise CheckpointError(
        f"{what}: missing {len(missing)} tensor(s) the config requires, e.g. {missing[:5]}"
    )
  known = set(expected)
  unexpected = sorted(
      n for n in available if n not in known and not n.endswith(IGNORED_HF_TENSOR_SUFFIXES)
  )
  if unexpected:
    raise CheckpointError(
        f"{what}: {len(unexpected)} tensor(s) the model has no place for, e.g. {unexpected[:5]} "
        "(another architecture, or a config.json that does not match the weights?)"
    )


def build_model(
    config: LlamaConfig,
    source: TensorSource,
    mappings: list[TensorMapping],
    sharding: Optional[ShardingContext] = None,
    what: str = "checkpoint",
    show_progress: bool = True,
) -> Llama:
  """A `Llama` whose every parameter comes from `source`, placed on `sharding` (one device if None)."""
  check_tensor_names(source, mappings, what)
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding))
  graphdef, abstract_state = nnx.split(abstract)
  variables = variable_paths(abstract_state)
  values: dict[tuple, jax.Array] = {}
  updaters: dict[tuple, Any] = {}
  dtype = config.weight_dtype

  for m in tqdm(mappings, desc=f"loading {what}", unit="tensor", disable=not show_progress,
                mininterval=2.0):
    if m.layer is not None and not config.scan_layers:
      path = (m.path[0], m.layer) + m.path[1:]
    else:
      path = m.path
    variable = variables[path]
    host = source.read(m.hf_name)
    if tuple(host.shape) != m.hf_shape:
      raise CheckpointError(
          f"{source.where(m.hf_name)}: tensor {m.hf_name!r} has shape {tuple(host.shape)}, "
          f"the config expects {m.hf_shape}"
      )
    host = m.to_model(host).astype(dtype)
    stacked = m.layer is not None and config.scan_layers
    if not stacked:
      values[path] = _put(host, target_sharding(variable, sharding))
      continue
    if path not in values:
      full = target_sharding(variable, sharding)
      values[path] = jax.jit(lambda s=variable.value.shape: jnp.zeros(s, dtype), out_shardings=full)()
      updaters[path] = jax.jit(
          lambda stack, layer, i: jax.lax.dynamic_update_index_in_dim(stack, layer, i, 0),
          donate_argnums=0, out_shardings=full,
      )
    layer_value = _put(host, target_sharding(variable, sharding, drop_leading=True))
    values[path] = updaters[path](values[path], layer_value, m.layer)
    del host, layer_value

  missing = [p for p in variables if p not in values]
  if missing:  # a mapping table that does not cover the model is a bug, never a partial load
    raise CheckpointError(f"{what}: parameters left unloaded: {missing[:5]}")
  state = jax.tree_util.tree_map_with_path(
      lambda p, v: v.replace(values[tuple(_key(k) for k in p)]),
      abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  return nnx.merge(graphdef, state)
