"""The train step shared by every trainer: `(state, batch, rng) -> (state, metrics)`.

A trainer supplies only a loss: `loss_fn(model, micro_batch, rng) -> LossOutput`, where the loss
is a *sum* over the micro-batch together with the weight it is a sum over (target tokens for SFT,
pairs for reward models). Summing lets gradient accumulation give exactly the full-batch gradient:
micro-batch gradients of the summed loss are added up in fp32 inside a `lax.scan`, and divided by
the total weight once at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from helpsteer_jax.train.state import TrainState, tree_norm

Batch = dict[str, jax.Array]


@dataclasses.dataclass
class LossOutput:
  """`total`: summed loss (scalar); `weight`: what it sums over; `metrics`: more sums over the same
  weight (reported divided by it), e.g. accuracy counts."""

  total: jax.Array
  weight: jax.Array
  metrics: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


jax.tree_util.register_dataclass(LossOutput, data_fields=["total", "weight", "metrics"], meta_fields=[])

LossFn = Callable[[nnx.Module, Batch, jax.Array], LossOutput]


def split_micro_batches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B / num, ...] for every entry (rows stay in order: micro-batch i holds rows
  i*B/num .. (i+1)*B/num - 1)."""

  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {num} micro-batches")
    return x.reshape(num, x.shape[0] // num, *x.shape[1:])

  return jax.tree.map(split, batch)


def make_train_step(
  graphdef: nnx.GraphDef,
  rest: nnx.State,
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  grad_accum_steps: int = 1,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
  """The pure step function (jit it with shardings and donation, as
  `loop.train_and_evaluate` and the planner do).

  `rest` holds the model's non-trainable state (e.g. nothing for Llama; buffers otherwise); it is
  closed over, not updated.
  """

  def summed_loss(params, micro, rng):
    model = nnx.merge(graphdef, params, rest)
    out = loss_fn(model, micro, rng)
    return out.total, out

  grad_fn = jax.grad(summed_loss, has_aux=True)

  def step(state: TrainState, batch: Batch, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    if grad_accum_steps == 1:
      # One micro-batch: its gradients are the batch's, with no fp32 accumulator beside them (at 8B
      # in bf16 the accumulator alone is 32 GB). The result is the same: each gradient is cast to
      # fp32 before the division either way, and adding it to zeros is exact.
      grads, out = grad_fn(state.params, batch, jax.random.fold_in(rng, 0))
      stats = {"total": out.total, "weight": out.weight, **out.metrics}
      stats = jax.tree.map(lambda a: a.astype(jnp.float32), stats)
      return _apply(state, grads, stats)
    micro_batches = split_micro_batches(batch, grad_accum_steps)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)

    def accumulate(carry, inputs):
      grads, stats = carry
      index, micro = inputs
      g, out = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
      grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
      stats = jax.tree.map(
        lambda a, b: a + b.astype(jnp.float32), stats, {"total": out.total, "weight": out.weight, **out.metrics}
      )
      return (grads, stats), None

    first = jax.eval_shape(lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro_batches), rng)[1])
    zero_stats = {
      "total": jnp.zeros((), jnp.float32),
      "weight": jnp.zeros((), jnp.float32),
      **{k: jnp.zeros((), jnp.float32) for k in first.metrics},
    }
    (grads, stats), _ = jax.lax.scan(accumulate, (zeros, zero_stats), (jnp.arange(grad_accum_steps), micro_batches))
    return _apply(state, grads, stats)

  def _apply(state: TrainState, grads, stats: dict[str, jax.Array]):
    """The update from summed gradients and summed stats (fp32), divided by the total weight."""
    weight = jnp.maximum(stats["weight"], 1e-9)
    grads = jax.tree.map(lambda g, p: (g.astype(jnp.float32) / weight).astype(p.dtype), grads, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      "loss": stats["total"] / weight,
      "grad_norm": tree_norm(grads),
      "param_norm": tree_norm(params),
      "learning_rate": schedule(state.step),
      "loss_weight": stats["weight"],
      **{k: v / weight for k, v in stats.items() if k not in ("total", "weight")},
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def make_eval_step(graphdef: nnx.GraphDef, rest: nnx.State, loss_fn: LossFn):
  """`(params, batch, rng) -> sums` for an eval loop that divides at the end."""

  def evaluate(params: nnx.State, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    out = loss_fn(nnx.merge(graphdef, params, rest), batch, rng)
    return {
      "total": out.total.astype(jnp.float32),
      "weight": out.weight.astype(jnp.float32),
      **{k: v.astype(jnp.float32) for k, v in out.metrics.items()},
    }

  return evaluate


def finalize_eval(sums: dict[str, Any]) -> dict[str, float]:
  weight = max(float(sums["weight"]), 1e-9)
  out = {"loss": float(sums["total"]) / weight, "loss_weight": float(sums["weight"])}
  out.update({k: float(v) / weight for k, v in sums.items() if k not in ("total", "weight")})
  return out
