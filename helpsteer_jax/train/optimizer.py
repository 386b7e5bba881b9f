"""AdamW with linear warmup, a cosine, linear or constant schedule and global-norm gradient clipping.

The schedule is NeMo's `CosineAnnealing` shape, which the published recipes are written in:
warmup to the peak, decay to `final_lr_fraction * peak`, and hold that for the last
`constant_steps`. A constant schedule after warmup is `schedule="constant"` (NeMo writes it as
`min_lr = lr`).

Weight decay skips the RMSNorm scales (found by their logical axis, so stacked [L, D] scales are
skipped too), as is usual for Llama training.

`check_optim_config` refuses a value no run could train with (a learning rate of 0, a beta of 1,
a negative weight decay) when the run starts, before any model loads, naming the field and its
value; `check_schedule_length` refuses a warmup or final hold longer than the run once its
length is known.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import optax
from flax import nnx

from helpsteer_jax.parallel import axes as ax

SCHEDULES = ("cosine", "constant", "linear")


class OptimizerConfigError(ValueError):
  """An `optim` field whose value no run can train with; the message names each such field."""


def _positive(x: float) -> bool:
  return x > 0


def _non_negative(x: float) -> bool:
  return x >= 0


def _beta(x: float) -> bool:
  return 0 <= x < 1


def _fraction(x: float) -> bool:
  return 0 <= x <= 1


# Field -> (the rule a value must satisfy, what the rule says, whether it must be a whole number).
_RULES: dict[str, tuple[Callable[[float], bool], str, bool]] = {
  "learning_rate": (_positive, "must be > 0", False),
  "warmup_steps": (_non_negative, "must be >= 0", True),
  "final_lr_fraction": (_fraction, "must be in [0, 1] (the final lr as a fraction of the peak)", False),
  "constant_steps": (_non_negative, "must be >= 0", True),
  "b1": (_beta, "must be in [0, 1)", False),
  "b2": (_beta, "must be in [0, 1)", False),
  # 0 would divide by zero for a parameter whose gradients have all been zero.
  "eps": (_positive, "must be > 0", False),
  "weight_decay": (_non_negative, "must be >= 0", False),
  "grad_clip_norm": (_non_negative, "must be >= 0 (0 = no clipping)", False),
}


def _field_problem(name: str, value: Any) -> str:
  """Why `optim.<name>=value` cannot be used ('' when it can)."""
  rule, says, whole = _RULES[name]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return f"optim.{name}={value!r}: must be a number"
  if not math.isfinite(value):
    return f"optim.{name}={value!r}: must be finite"
  if whole and value != int(value):
    return f"optim.{name}={value!r}: must be a whole number of steps"
  return "" if rule(value) else f"optim.{name}={value!r}: {says}"


def check_optim_config(optim_config) -> None:
  """Raises `OptimizerConfigError` naming every field of the `optim` block (learning_rate,
  warmup_steps, schedule, final_lr_fraction, constant_steps, b1, b2, eps, weight_decay,
  grad_clip_norm) whose value is out of range."""
  problems = []
  schedule = optim_config.get("schedule", "cosine")
  if schedule not in SCHEDULES:
    problems.append(f"optim.schedule={schedule!r}: expected one of {SCHEDULES}")
  for name in _RULES:
    if name in optim_config:
      problem = _field_problem(name, optim_config[name])
      if problem:
        problems.append(problem)
  if problems:
    raise OptimizerConfigError("the optimizer config cannot train: " + "; ".join(problems))


def check_schedule_length(optim_config, total_steps: int) -> None:
  """Raises `OptimizerConfigError` when the warmup, or the warmup and the final hold of a decaying
  schedule, take more steps than the run has: the peak or the decay would never be reached."""
  warmup = int(optim_config.get("warmup_steps", 0))
  hold = int(optim_config.get("constant_steps", 0))
  if warmup > total_steps:
    raise OptimizerConfigError(
      f"optim.warmup_steps={warmup} is longer than the run ({total_steps} "
      "steps): the learning rate would never reach its peak"
    )
  decays = optim_config.get("schedule", "cosine") != "constant"
  if decays and hold and warmup + hold > total_steps:
    raise OptimizerConfigError(
      f"optim.constant_steps={hold} with optim.warmup_steps={warmup} is longer than the run "
      f"({total_steps} steps): the schedule would never decay"
    )


def learning_rate_schedule(
  peak: float,
  total_steps: int,
  warmup_steps: int = 0,
  kind: str = "cosine",
  final_fraction: float = 0.1,
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


def make_optimizer(
  optim_config, total_steps: int, params: nnx.State
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer from a config block with fields learning_rate, warmup_steps, schedule,
  final_lr_fraction, constant_steps, b1, b2, eps, weight_decay, grad_clip_norm (0 = no clipping)."""
  check_optim_config(optim_config)
  schedule = learning_rate_schedule(
    optim_config.learning_rate,
    total_steps,
    optim_config.warmup_steps,
    optim_config.schedule,
    optim_config.final_lr_fraction,
    optim_config.get("constant_steps", 0),
  )
  parts = []
  if optim_config.grad_clip_norm and optim_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  parts.append(
    optax.adamw(
      schedule,
      b1=optim_config.b1,
      b2=optim_config.b2,
      eps=optim_config.eps,
      weight_decay=optim_config.weight_decay,
      mask=decay_mask(params),
    )
  )
  return optax.chain(*parts), schedule
