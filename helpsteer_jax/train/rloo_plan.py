"""What RLOO holds on each device: the policy's train state (parameters and optimizer moments, from
the optimizer's own abstract state), its gradients during the step, the frozen reference, the
reward model, and the decode cache of the rollouts, with the rollout slots that fit.

Parameters, moments, gradients, reference and reward model are split over fsdp x tensor; the
rollout cache holds, per slot, 2 x layers x the KV heads a device holds x head size x positions,
at the longest rollout (`rloo.max_prompt_tokens`, or `prompt_tokens` where prompts are not cut,
plus `rloo.max_new_tokens`). The slots are the step's rollouts (prompts x samples), at most the
sampler's cap and what the budget leaves. Activations of the train step come on top: the train
planner (`python -m helpsteer_jax.plan --config=...`) compiles the step for them.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from ml_collections import ConfigDict

from helpsteer_jax.parallel.device_memory import GIB, dtype_bytes, kv_bytes_per_slot, mesh_axes

# Slots of the engine that samples the rollouts (sampling/sampler.py `sample_tokens`).
SAMPLER_SLOTS = 32


@dataclasses.dataclass(frozen=True)
class RLOOMemoryPlan:
  mesh: tuple[int, int, int]
  devices: int
  budget: int
  state: int  # per device: parameters and optimizer moments
  gradients: int
  reference: int
  reward_model: int
  kv_per_slot: int
  rollout_length: int
  rollouts: int
  slots: int

  @property
  def resident(self) -> int:
    return self.state + self.gradients + self.reference + self.reward_model + self.slots * self.kv_per_slot

  def lines(self) -> list[str]:
    g = lambda b: f"{b / GIB:.2f} GiB"
    return [
      f"mesh (data, fsdp, tensor) {self.mesh} on {self.devices} devices; budget {g(self.budget)} per device",
      f"policy state (parameters and optimizer moments) {g(self.state)}, gradients {g(self.gradients)}, "
      f"frozen reference {g(self.reference)}, reward model {g(self.reward_model)}",
      f"rollout cache: {self.slots} slots of {self.rollout_length} positions for {self.rollouts} rollouts "
      f"a step, {g(self.kv_per_slot)} a slot, {g(self.slots * self.kv_per_slot)} in all",
      f"resident {g(self.resident)} of {g(self.budget)}: {'fits' if self.resident <= self.budget else 'does NOT fit'}"
      " (train-step activations on top)",
    ]


def _bytes(tree) -> int:
  return sum(int(math.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def plan_rloo(
  config: ConfigDict, devices: int, hbm_bytes: float, memory_fraction: float = 0.9, prompt_tokens: int = 3072
) -> RLOOMemoryPlan:
  """The plan of RLOO config `config` on `devices` devices of `hbm_bytes` each."""
  from flax import nnx

  from helpsteer_jax.models.llama import Llama
  from helpsteer_jax.train.model_setup import model_config
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.state import abstract_train_state

  _, fsdp, tensor = axes = mesh_axes(tuple(config.mesh.shape), devices)
  shards = fsdp * tensor
  mc = model_config(config)
  abstract = nnx.eval_shape(lambda: Llama(mc, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  optimizer, _ = make_optimizer(config.optim, max(1, int(config.get("total_steps", 1) or 1)), params)
  state = _bytes(abstract_train_state(params, optimizer)) // shards
  param_bytes = _bytes(params) // shards
  # The Edit RM: the policy's body with a one-row head, in the compute dtype it is loaded in.
  rm_params = mc.replace(tie_word_embeddings=True).num_params()
  reward = 0 if not config.rloo.reward_model else rm_params * dtype_bytes(mc.dtype) // shards
  rl = config.rloo
  length = (rl.max_prompt_tokens if rl.max_prompt_tokens > 0 else prompt_tokens) + rl.max_new_tokens
  per_slot = kv_bytes_per_slot(mc, length, tensor)
  budget = int(hbm_bytes * memory_fraction)
  rollouts = int(config.data.batch_size) * int(rl.num_samples)
  left = budget - state - param_bytes - param_bytes - reward
  slots = max(0, min(rollouts, SAMPLER_SLOTS, left // per_slot if per_slot else rollouts))
  return RLOOMemoryPlan(
    axes, devices, budget, state, param_bytes, param_bytes, reward, per_slot, length, rollouts, slots
  )
