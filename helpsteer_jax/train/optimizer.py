"""AdamW with linear warmup, a cosine, linear or constant schedule and global-norm gradient clipping.

The schedule is NeMo's `CosineAnnealing` shape, which the published recipes are written in:
warmup to the peak, decay to `final_lr_fraction * peak`, and hold that for the last
`constant_steps`. A constant schedule after warmup is `schedule="constant"` (NeMo writes it as
`min_lr = lr`).

Weight decay skips the RMSNorm scales (found by their logical axis, so stacked [L, D] scales are
skipped too), as is usual for Llama training.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from helpsteer_jax.parallel import axes as ax

SCHEDULES = ("cosine", "constant", "linear")


def learning_rate_schedule(
    peak: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine", final_fraction: float = 0.1,
    constant_steps: int = 0,
) -> optax.Schedule:
  """Linear warmup from 0 to `peak`, then cosine (to `final_fraction * peak`), linear, or constant;
  a decay ends `constant_steps` before the last step and holds its final value from there."""
  if kind not in SCHEDULES:
    raise ValueError(f"schedule {kind!r}; expected one of {SCHEDULES}")
  if total_steps <= 0:
    raise ValueError(f"total_steps={total_steps} must be positive")
  warmup_steps = min(max(warmup_steps, 0), total_steps)
  constant_steps = min(max(constant_steps, 0), total_steps - warmup_steps)
  decay_steps = max(total_steps - warmup_steps - constant_steps, 1)
  if kind == "constant":
    after = optax.constant_schedule(peak)
  elif kind == "linear":
    after = optax.linear_schedule(peak, peak * final_fraction, decay_steps)
  else:
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=final_fraction)
  if warmup_steps == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps])


def decay_mask(params: nnx.State):
  """True for parameters that get weight decay: everything but normalisation scales."""

  def wants_decay(variable: nnx.Variable) -> nnx.Variable:
    axes = tuple(variable.get_metadata().get("logical_axes", ()))
    # Same tree structure as the parameters (Variables kept), booleans as leaves: what optax expects.
    return variable.replace(ax.NORM not in axes)

  return jax.tree.map(wants_decay, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(optim_config, total_steps: int, params: nnx.State) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer from a config block with fields learning_rate, warmup_steps, schedule,
  final_lr_fraction, constant_steps, b1, b2, eps, weight_decay, grad_clip_norm (0 = no clipping)."""
  schedule = learning_rate_schedule(
      optim_config.learning_rate, total_steps, optim_config.warmup_steps, optim_config.schedule,
      optim_config.final_lr_fraction, optim_config.get("constant_steps", 0),
  )
  parts = []
  if optim_config.grad_clip_norm and optim_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  parts.append(optax.adamw(
      schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps,
      weight_decay=optim_config.weight_decay, mask=decay_mask(params),
  ))
  return optax.chain(*parts), schedule
