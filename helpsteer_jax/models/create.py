"""Creating models with random weights, already sharded: eval_shape -> specs -> jit(init, out_shardings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, TypeVar

import jax
from flax import nnx

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext, state_shardings


def abstract_model(config: LlamaConfig, sharding: Optional[ShardingContext] = None) -> Llama:
  """The model with ShapeDtypeStructs for parameters: shapes and counts, nothing allocated."""
  return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding))


def count_params(config: LlamaConfig) -> int:
  state = nnx.state(abstract_model(config), nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(state))


def create_sharded_model(config: LlamaConfig, sharding: Optional[ShardingContext], seed: int = 0) -> Llama:
  """A randomly initialised model whose parameters are created directly on their shards, so no
  device ever holds more than its part (the way a 70B model must be initialised)."""
  return create_sharded_module(lambda rngs, ctx: Llama(config, rngs=rngs, sharding=ctx), sharding, seed)


M = TypeVar("M", bound=nnx.Module)


def create_sharded_module(
  make: Callable[[nnx.Rngs, Optional[ShardingContext]], M],
  sharding: Optional[ShardingContext],
  seed: int = 0,
) -> M:
  """Any module built by `make(rngs, sharding)` (e.g. a reward model), initialised on its shards."""
  if sharding is None:
    return make(nnx.Rngs(seed), None)
  graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(seed), sharding)))
  shardings = state_shardings(abstract_state, sharding)

  @jax.jit
  def init():
    state = nnx.state(make(nnx.Rngs(seed), sharding))
    return jax.lax.with_sharding_constraint(state, shardings)

  with jax.set_mesh(sharding.mesh):
    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)
