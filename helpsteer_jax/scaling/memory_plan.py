"""How much device memory the search's roles take, and which schedule fits.

Per role: the weights each device holds (parameters x bytes of their dtype over the fsdp x tensor
shards), and the KV cache one slot needs at the role's longest request (its worst-case prompt,
`scaling/request_lengths.py`, plus its `max_new_tokens`): 2 (keys and values) x layers x the KV
heads a device holds (at least one: heads are split over the tensor axis, and repeated when the
axis is wider than the heads) x head size x positions x bytes of the cache dtype. The slots that
fit are what the budget (`memory_fraction` of each device's memory) leaves after the weights,
over the KV bytes of one slot; the rest of the memory is kept for activations and compiled
programs.

`pipelined` needs every role's model at once and each engine's slots beside them; `staged`
(scaling/staged.py) needs one model and its engine's slots at a time. The plan picks pipelined
where it fits with `search.batch_size` slots per engine, else staged.

The decode-time estimate is bandwidth-bound: each step reads the weights and the live slots'
caches (at half their longest length on average) once per device, at `efficiency` of the HBM
bandwidth, and yields one token per slot. Prefill, the selector's scoring and model loading are
left out: at the paper's lengths decode dominates (docs/70b.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.parallel.device_memory import GIB, kv_bytes_per_slot, weight_bytes_per_device


def slots_that_fit(budget: int, weights: int, per_slot: int) -> int:
  return max(0, (budget - weights) // per_slot) if per_slot else 0


@dataclasses.dataclass(frozen=True)
class RolePlan:
  """One stage's model: `key` names it (roles with one key share it and its engine)."""

  stage: str  # policy | feedback | edit | select
  key: str
  config: LlamaConfig
  source: str  # where its shape came from
  longest: int  # positions of its longest request, prompt and new tokens
  weight_bytes: int  # per device
  kv_bytes_per_slot: int  # per device, at `longest`
  slots_alone: int  # slots that fit beside its weights alone (the staged schedule)


@dataclasses.dataclass(frozen=True)
class SearchMemoryPlan:
  roles: list[RolePlan]
  budget: int  # bytes per device for weights and caches
  batch_size: int
  pipelined_bytes: int  # every model, and batch_size slots per engine, per device
  schedule: str  # pipelined | staged | neither

  @property
  def pipelined_fits(self) -> bool:
    return self.pipelined_bytes <= self.budget

  def slots(self, role: RolePlan) -> int:
    """The slots its engine gets under the chosen schedule (at most `batch_size`)."""
    if self.schedule == "pipelined":
      return self.batch_size
    return min(self.batch_size, role.slots_alone)

  def lines(self) -> list[str]:
    g = lambda b: f"{b / GIB:.2f} GiB"
    out = [f"{'stage':<9} {'weights/dev':>12} {'longest':>8} {'KV/slot/dev':>12} {'slots fit':>10}  model"]
    for r in self.roles:
      slots = "-" if r.stage == "select" else str(r.slots_alone)
      out.append(
        f"{r.stage:<9} {g(r.weight_bytes):>12} {r.longest:>8} {g(r.kv_bytes_per_slot):>12} "
        f"{slots:>10}  {r.key} ({r.source})"
      )
    out.append(
      f"budget per device {g(self.budget)}; pipelined needs {g(self.pipelined_bytes)} "
      f"(every model and {self.batch_size} slots per engine): "
      f"{'fits' if self.pipelined_fits else 'does not fit'}"
    )
    if self.schedule == "neither":
      out.append("schedule: neither fits: no stage's model leaves room for one slot; use more devices")
    else:
      per_stage = ", ".join(f"{r.stage} {self.slots(r)}" for r in self.roles if r.stage != "select")
      out.append(f"schedule: {self.schedule} (slots per stage: {per_stage})")
    return out


def plan_search(
  roles: Sequence[tuple[str, str, LlamaConfig, str, int]],
  batch_size: int,
  hbm_bytes: float,
  memory_fraction: float,
  fsdp: int,
  tensor: int,
) -> SearchMemoryPlan:
  """`roles`: (stage, model key, model config, where the config came from, longest request) for
  policy, feedback, edit and select (select's cache holds one scored sequence at a time)."""
  budget = int(hbm_bytes * memory_fraction)
  plans = []
  for stage, key, config, source, longest in roles:
    weights = weight_bytes_per_device(config, fsdp, tensor)
    per_slot = kv_bytes_per_slot(config, longest, tensor)
    plans.append(
      RolePlan(stage, key, config, source, longest, weights, per_slot, slots_that_fit(budget, weights, per_slot))
    )
  weights_by_key = {r.key: r.weight_bytes for r in plans}
  caches: dict[str, int] = {}
  for r in plans:  # an engine's slots hold its longest request of any stage
    cache = r.kv_bytes_per_slot * (1 if r.stage == "select" else batch_size)
    caches[r.key] = max(caches.get(r.key, 0), cache)
  pipelined = sum(weights_by_key.values()) + sum(caches.values())
  if pipelined <= budget:
    schedule = "pipelined"
  elif all(r.slots_alone >= 1 for r in plans):
    schedule = "staged"
  else:
    schedule = "neither"
  return SearchMemoryPlan(plans, budget, batch_size, pipelined, schedule)


@dataclasses.dataclass(frozen=True)
class StageTokens:
  """Mean generated tokens per prompt of one stage, and the mean length of its requests."""

  stage: str
  tokens: float
  mean_length: float


def decode_hours(
  plan: SearchMemoryPlan,
  stages: Sequence[StageTokens],
  prompts: int,
  hbm_tb_s: float,
  efficiency: float = 0.5,
  data: int = 1,
) -> float:
  """Bandwidth-bound decode hours of the run (see the module docstring); `data`: replicas of the
  model over the mesh's data axis, each with its own slots."""
  by_stage = {r.stage: r for r in plan.roles}
  seconds = 0.0
  for s in stages:
    role = by_stage[s.stage]
    slots = plan.slots(role)
    per_slot = role.kv_bytes_per_slot * s.mean_length / role.longest  # the cache read at its mean length
    step_bytes = role.weight_bytes + slots * per_slot
    step_s = step_bytes / (hbm_tb_s * 1e12 * efficiency)
    seconds += prompts * s.tokens / (slots * data) * step_s
  return seconds / 3600


def engine_slots(
  config: LlamaConfig,
  longest: int,
  tensor: int,
  batch_size: int,
  limit_bytes: Optional[int],
  in_use_bytes: int,
  memory_fraction: float,
) -> tuple[int, str]:
  """The slots an engine takes from a memory budget: at most `batch_size`, and no more than the
  budget (`memory_fraction` of the device's `limit_bytes`, less what is in use) holds at
  `longest` positions each; with the reason, for the log."""
  per_slot = kv_bytes_per_slot(config, longest, tensor)
  if limit_bytes is None or memory_fraction <= 0:
    return batch_size, "search.batch_size (no device memory limit to size against)"
  free = int(limit_bytes * memory_fraction) - in_use_bytes
  fit = free // per_slot if per_slot else batch_size
  if fit < 1:
    raise MemoryError(
      f"{free / GIB:.2f} GiB of the memory budget ({memory_fraction:.0%} of {limit_bytes / GIB:.1f} GiB, "
      f"{in_use_bytes / GIB:.2f} GiB in use) is left, and one slot of {longest} positions needs "
      f"{per_slot / GIB:.2f} GiB: use search.schedule=staged, more devices, or shorter max_new_tokens"
    )
  slots = min(batch_size, int(fit))
  return slots, (
    f"{slots} slots of {longest} positions ({slots * per_slot / GIB:.2f} GiB of cache per "
    f"device; {int(fit)} fit in {memory_fraction:.0%} of {limit_bytes / GIB:.1f} GiB "
    f"with {in_use_bytes / GIB:.2f} GiB in use)"
  )
