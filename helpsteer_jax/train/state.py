"""The train state: a pytree of step, fp32 master parameters and optimizer state.

The model's structure (`graphdef`) is static and kept apart, so the state is what a jitted step
donates and returns, what Orbax saves, and what the shardings are computed for.
"""

from __future__ import annotations

from typing import Any, Optional, cast

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from helpsteer_jax.parallel.partitioning import ShardingContext, state_shardings
from helpsteer_jax.parallel.tree_paths import path_names


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates done
  params: nnx.State  # trainable parameters (nnx.Param), fp32 master copy
  opt_state: optax.OptState


def init_state(params: nnx.State, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def train_state_shardings(
  abstract_params: nnx.State, optimizer: optax.GradientTransformation, sharding: ShardingContext
) -> TrainState:
  """NamedShardings for every leaf of the train state.

  Parameters follow their logical axes; optimizer moments (whose tree ends in the same path as a
  parameter and has its shape) follow their parameter; counters and anything else are replicated.
  """
  param_shardings = state_shardings(abstract_params, sharding)
  by_path: dict[tuple, tuple[tuple, Any]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    by_path[path_names(path)] = leaf.shape
  flat_shardings = {path_names(path): s for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)

  def for_opt_leaf(path, leaf):
    key = path_names(path)
    for start in range(len(key)):
      suffix = key[start:]
      if suffix in by_path and tuple(by_path[suffix]) == tuple(leaf.shape):
        return flat_shardings[suffix]
    return replicated

  opt_shardings = jax.tree_util.tree_map_with_path(for_opt_leaf, abstract_opt)
  # A tree of the state's structure with a sharding at each leaf: the step's leaf is a sharding here.
  return TrainState(step=cast(jax.Array, replicated), params=param_shardings, opt_state=opt_shardings)


def abstract_train_state(
  abstract_params: nnx.State, optimizer: optax.GradientTransformation, shardings: Optional[TrainState] = None
) -> TrainState:
  """ShapeDtypeStructs of the state (with shardings when given): what restore and AOT compile use."""
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer), abstract_params)
  if shardings is None:
    return abstract
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def tree_norm(tree) -> jax.Array:
  """Global L2 norm of all leaves, accumulated in fp32."""
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
