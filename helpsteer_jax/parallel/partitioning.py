"""Sharding a model: a (mesh, rules) context, parameter shardings and activation constraints."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from helpsteer_jax.parallel.rules import DEFAULT_RULES, Rules, logical_to_spec


@dataclasses.dataclass(frozen=True)
class ShardingContext:
  """Where arrays live: a mesh and the logical-to-mesh rules. Hashable, so it can be static."""

  mesh: jax.sharding.Mesh
  rules: Rules = DEFAULT_RULES

  def spec(self, logical_axes: Sequence[Optional[str]], shape: Optional[Sequence[int]] = None) -> PartitionSpec:
    return logical_to_spec(logical_axes, self.rules, self.mesh, shape)

  def sharding(self, logical_axes: Sequence[Optional[str]], shape: Optional[Sequence[int]] = None) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical_axes, shape))


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]], ctx: Optional[ShardingContext]) -> jax.Array:
  """`with_sharding_constraint` by logical names; a no-op without a sharding context."""
  if ctx is None:
    return x
  return jax.lax.with_sharding_constraint(x, ctx.sharding(logical_axes, x.shape))


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def variable_sharding(variable: nnx.Variable, ctx: ShardingContext) -> NamedSharding:
  axes = variable.get_metadata().get("logical_axes")
  if axes is None:
    raise ValueError(f"variable of shape {variable.get_value().shape} has no logical_axes metadata")
  return ctx.sharding(axes, variable.get_value().shape)


def state_shardings(state: nnx.State, ctx: ShardingContext) -> nnx.State:
  """The NamedSharding of every variable in `state` (arrays or ShapeDtypeStructs), by its logical axes."""
  return jax.tree.map(lambda v: v.replace(variable_sharding(v, ctx)), state, is_leaf=_is_variable)
