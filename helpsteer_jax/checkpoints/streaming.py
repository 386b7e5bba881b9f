"""Builds a model from a tensor source one tensor at a time, straight onto the target sharding.

Nothing is materialised whole on the host: the model's parameter tree comes from `nnx.eval_shape`,
each checkpoint tensor is read, converted and placed on its devices before the next one is read,
and stacked (scanned) layer parameters are preallocated on their devices and filled layer by layer
with a donated in-place update. Each tensor is waited for and its host buffers freed (and handed
back to the OS) before the next is read, so on top of the model's own bytes host memory holds
only about two copies of the largest tensor (as read, and converted to the model's layout).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
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
from helpsteer_jax.parallel.tree_paths import path_key


class TensorSource(Protocol):
  """Named host tensors in HF layout (a safetensors folder, a GGUF file, ...)."""

  def names(self) -> Sequence[str]: ...

  def read(self, name: str) -> np.ndarray: ...

  def where(self, name: str) -> str:
    """The file holding `name`, for error messages."""
    ...

  # Optional: `shape(name) -> tuple[int, ...]` without reading the data lets `build_model` check
  # every shape before the load starts.


def variable_paths(state: nnx.State) -> dict[tuple, nnx.Variable]:
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {path_key(path): var for path, var in leaves}


def target_sharding(variable: nnx.Variable, sharding: Optional[ShardingContext], drop_leading: bool = False):
  shape = tuple(variable.get_value().shape)
  axes = tuple(variable.get_metadata()["logical_axes"])
  if drop_leading:
    shape, axes = shape[1:], axes[1:]
  if sharding is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return sharding.sharding(axes, shape)


def _put(host: np.ndarray, target) -> jax.Array:
  """Places a host array on `target`; each process contributes only its addressable shards."""
  return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def check_tensor_names(
  source: TensorSource, mappings: list[TensorMapping], what: str, ignore: Collection[str] = ()
) -> None:
  expected = [m.hf_name for m in mappings]
  available = set(source.names()) - set(ignore)
  missing = [n for n in expected if n not in available]
  if missing:
    raise CheckpointError(
      f"{what}: missing {len(missing)} tensor(s) the config requires, e.g. {missing[:5]} "
      "(a partial checkpoint, or a config whose sizes do not match the weights?)"
    )
  known = set(expected)
  unexpected = sorted(n for n in available if n not in known and not n.endswith(IGNORED_HF_TENSOR_SUFFIXES))
  if unexpected:
    examples = ", ".join(f"{n!r} (in {source.where(n)})" for n in unexpected[:5])
    hint = "another architecture, or a config.json that does not match the weights?"
    if "lm_head.weight" in unexpected and "lm_head.weight" not in known:
      hint = "the config ties the output layer to the embedding, yet the checkpoint has lm_head.weight"
    raise CheckpointError(f"{what}: {len(unexpected)} tensor(s) the model has no place for, e.g. {examples} ({hint})")
  shape_of = getattr(source, "shape", None)
  if shape_of is not None:  # fail before reading gigabytes, not halfway through the load
    for m in mappings:
      _check_tensor(source, m, shape_of(m.hf_name), None)


def _check_tensor(source: TensorSource, m: TensorMapping, shape: Sequence[int], dtype) -> None:
  if tuple(shape) != m.hf_shape:
    raise CheckpointError(
      f"{source.where(m.hf_name)}: tensor {m.hf_name!r} has shape {tuple(shape)}, the config expects {m.hf_shape}"
    )
  if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
    raise CheckpointError(
      f"{source.where(m.hf_name)}: tensor {m.hf_name!r} has dtype {np.dtype(dtype).name}, "
      "expected a floating-point weight"
    )


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
  try:
    return getattr(ctypes.CDLL(None), "malloc_trim", None)
  except (OSError, TypeError):  # no C library handle on this platform
    return None


def _return_freed_host_memory() -> None:
  """Hands freed heap pages back to the OS (glibc only; elsewhere a no-op).

  After the first large free glibc raises its mmap threshold (up to 32 MB), so later tensor-sized
  host buffers come from the heap, interleaved with XLA's CPU device buffers. Freed, they stay in
  the process: without trimming, resident memory grows by several tensors over a load.
  """
  trim = _malloc_trim()
  if trim is not None:
    trim(0)


@functools.lru_cache(maxsize=256)
def _zeros(sharding: jax.sharding.Sharding, shape: tuple[int, ...], dtype) -> Callable[[], jax.Array]:
  """A jitted constructor of a zero stack created directly in its sharding (cached like below)."""
  return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)


@functools.lru_cache(maxsize=64)
def _layer_updater(sharding: jax.sharding.Sharding) -> Callable[[jax.Array, jax.Array, int], jax.Array]:
  """`stack[i] = layer` in place (the stack is donated); one jitted function per sharding, so
  parameters of equal shape, and later loads of the same model, reuse its compilations."""
  return jax.jit(
    lambda stack, layer, i: jax.lax.dynamic_update_index_in_dim(stack, layer, i, 0),
    donate_argnums=0,
    out_shardings=sharding,
  )


def build_model(
  config: LlamaConfig,
  source: TensorSource,
  mappings: list[TensorMapping],
  sharding: Optional[ShardingContext] = None,
  what: str = "checkpoint",
  show_progress: bool = True,
  *,
  make_model: Optional[Callable[[], nnx.Module]] = None,
  initial_values: Optional[Mapping[tuple, Callable[[tuple[int, ...]], np.ndarray]]] = None,
  ignore: Collection[str] = (),
) -> Any:
  """A model whose every parameter comes from `source`, placed on `sharding` (one device if None).

  The model is a `Llama` unless `make_model` (called under `nnx.eval_shape`, so it allocates
  nothing) builds another module, e.g. a `RewardModel`; `mappings` then name its parameter paths.
  `initial_values` maps the path of a parameter no tensor provides to a function of its shape
  returning host values (e.g. a fresh reward head); `ignore` lists tensors of `source` to skip.
  """
  check_tensor_names(source, mappings, what, ignore)
  if make_model is None:
    make_model = lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding)
  abstract = nnx.eval_shape(make_model)
  graphdef, abstract_state = nnx.split(abstract)
  variables = variable_paths(abstract_state)
  values: dict[tuple, jax.Array] = {}
  dtype = config.weight_dtype

  for m in tqdm(mappings, desc=f"loading {what}", unit="tensor", disable=not show_progress, mininterval=2.0):
    path = m.variable_path(config.scan_layers)
    variable = variables[path]
    host = source.read(m.hf_name)
    _check_tensor(source, m, host.shape, host.dtype)
    host = m.to_model(host).astype(dtype, copy=False)
    stacked = m.layer is not None and config.scan_layers
    if not stacked:
      values[path] = _put(host, target_sharding(variable, sharding))
    else:
      full = target_sharding(variable, sharding)
      if path not in values:
        values[path] = _zeros(full, tuple(variable.get_value().shape), dtype)()
      layer_value = _put(host, target_sharding(variable, sharding, drop_leading=True))
      values[path] = _layer_updater(full)(values[path], layer_value, m.layer)
      del layer_value
    del host
    # Dispatch is asynchronous: waiting bounds the work in flight to one tensor, so host buffers
    # of pending copies and updates cannot pile up, and the trim below finds them freed.
    values[path].block_until_ready()
    _return_freed_host_memory()

  for path, init in (initial_values or {}).items():
    if path in values or path not in variables:
      why = "a tensor provides it" if path in values else "the model has no such parameter"
      raise CheckpointError(f"{what}: cannot initialise parameter {path}: {why}")
    variable = variables[path]
    host = np.asarray(init(tuple(variable.get_value().shape))).astype(dtype, copy=False)
    values[path] = _put(host, target_sharding(variable, sharding))
    values[path].block_until_ready()

  missing = [p for p in variables if p not in values]
  if missing:  # a mapping table that does not cover the model is a bug, never a partial load
    raise CheckpointError(f"{what}: parameters left unloaded: {missing[:5]}")
  state = jax.tree_util.tree_map_with_path(
    lambda p, v: v.replace(values[path_key(p)]),
    abstract_state,
    is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  return nnx.merge(graphdef, state)
