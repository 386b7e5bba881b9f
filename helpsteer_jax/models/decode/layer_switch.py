"""A loop over a list of layers that is compiled once and reads every layer's matrices in place.

A scan over stacked weights [L, ...] slices each layer's matrices out of the stack, and XLA:CPU
copies every slice before its product: for SmolLM2 that is the 425 MB of layer weights read and
written again at every decode step and every prefill chunk. An unrolled loop reads each layer's
own arrays in place, but traces and compiles every layer separately (the engine's decode programs
took 6-12 s to compile unrolled against ~2 s scanned on a 2-core CPU). Here the layers stay a list
of separate arrays and run as a scan over the layer index, in which every product with a matrix
is a `lax.switch` on that index: branch l multiplies by layer l's own array. The body is traced
and compiled once, and no matrix is copied. The vectors (norm scales) are stacked and indexed, a
few KB.

Each branch is the product the unrolled loop computes on the same array, so the results are bit
for bit those of the unrolled and of the scanned layers. Measured on a 2-core AMD EPYC (SmolLM2's
30 layers of 7 products, fp32): 16 rows 44.5 ms against 60.5 scanned and 39.7 unrolled; 128 rows
187 ms against 210 scanned and 180 unrolled.

For one device: the branches' operands carry no sharding rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


@jax.tree_util.register_pytree_node_class
class SwitchedWeight:
  """One matrix of every layer (L arrays of one shape) and the layer to use ([] int32).

  It stands in a layer's parameter where the layer code reads `param[...]` and casts it with
  `.astype`; a product with it (`layers.contract_last`) runs as `apply`."""

  def __init__(self, arrays: Sequence[jax.Array], index: jax.Array, dtype: Any = None):
    self.arrays = tuple(arrays)
    self.index = index
    self.dtype = jnp.dtype(dtype if dtype is not None else self.arrays[0].dtype)

  def __getitem__(self, key):
    if key is not Ellipsis:
      raise TypeError("a switched layer weight is read whole (`param[...]`)")
    return self

  def astype(self, dtype) -> "SwitchedWeight":
    """The cast happens inside each branch, on the one layer's array it reads."""
    return SwitchedWeight(self.arrays, self.index, dtype)

  def apply(self, fn: Callable[..., jax.Array], *operands) -> jax.Array:
    """`fn(layer's array, *operands)` for the layer `index` names."""

    def branch(array):
      return lambda *ops: fn(array.astype(self.dtype), *ops)

    return jax.lax.switch(self.index, [branch(a) for a in self.arrays], *operands)

  def tree_flatten(self):
    return (self.arrays, self.index), self.dtype

  @classmethod
  def tree_unflatten(cls, dtype, children):
    arrays, index = children
    return cls(arrays, index, dtype)


def switched_layers(layers: Sequence[nnx.Module]):
  """A list of identical layer modules -> (graphdef, vectors, state_at).

  `vectors` {path: [L, ...]} holds the stacked 1-D parameters, to be scanned over with the layer
  index; `state_at(rows, layer)` builds the state of layer `layer` from its rows of `vectors`,
  with every matrix a `SwitchedWeight` over the layers' own arrays."""
  graphdef, first = nnx.split(layers[0])
  template = nnx.to_flat_state(first)
  by_layer = [dict(nnx.to_flat_state(nnx.split(layer)[1])) for layer in layers]
  per_path = {path: [state[path][...] for state in by_layer] for path, _ in template}
  vectors = {path: jnp.stack(values) for path, values in per_path.items() if values[0].ndim < 2}

  def state_at(rows: dict, layer: jax.Array):
    values = []
    for path, var in template:
      value = rows[path] if path in rows else SwitchedWeight(per_path[path], layer)
      values.append((path, var.replace(value)))
    return nnx.from_flat_state(values)

  return graphdef, vectors, state_at
