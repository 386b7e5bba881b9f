"""The global batch, split into micro-batches over the mesh: what one optimizer step sees.

A recipe states `global_batch_size`, the rows one optimizer step averages over (examples for SFT,
pairs for Bradley-Terry, labelled responses for regression, samples for RLOO), as the papers do
(NeMo-Aligner's `model.global_batch_size`). The mesh decides how they are computed:

    global_batch_size = micro_batch_size x grad_accum_steps x data_parallel

where data_parallel = mesh `data` x `fsdp` (the axes the rows are split over) and
`micro_batch_size` is the rows each data-parallel shard runs in one forward and backward pass.
Give `micro_batch_size` (the memory-bound choice; accumulation is derived) or leave it 0 and give
`grad_accum_steps` (micro-batch derived). So 128 rows are 128 x 1 x 1 on one device, 1 x 16 x 8 on
a (1, 8, 8) mesh and 1 x 1 x 128 on 128 devices: the same step everywhere. A split that does not
divide is refused here, before anything is built or compiled.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from helpsteer_jax.parallel import axes as ax


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  global_batch_size: int  # rows per optimizer step
  micro_batch_size: int  # rows per data-parallel shard per pass
  grad_accum_steps: int  # passes per step
  data_parallel: int  # shards the rows are split over (mesh data x fsdp)

  def describe(self) -> str:
    return (
      f"global batch {self.global_batch_size} = micro-batch {self.micro_batch_size} x "
      f"{self.grad_accum_steps} accumulation steps x {self.data_parallel} data-parallel shards"
    )


def rows_per_step(config: ml_collections.ConfigDict) -> int:
  """The rows the data gives one step: `data.batch_size` (RLOO: prompts x `rloo.num_samples`)."""
  rows = int(config.data.batch_size)
  if config.get("trainer", "sft") == "rloo":
    rows *= int(config.rloo.num_samples)
  return rows


def global_batch_size(config: ml_collections.ConfigDict) -> int:
  """`config.global_batch_size`, checked against the rows the data gives (0 = those rows)."""
  rows = rows_per_step(config)
  stated = int(config.get("global_batch_size", 0) or 0)
  if stated and stated != rows:
    what = "data.batch_size x rloo.num_samples" if config.get("trainer", "sft") == "rloo" else "data.batch_size"
    raise ValueError(
      f"global_batch_size={stated} but {what} = {rows}: set both to the rows one optimizer step should average over"
    )
  if rows < 1:
    raise ValueError(f"data.batch_size={config.data.batch_size}; expected at least 1")
  return rows


def plan_batch(config: ml_collections.ConfigDict, data_parallel: int) -> BatchPlan:
  """The split of the global batch over `data_parallel` shards, from `micro_batch_size` or
  `grad_accum_steps`; a ValueError names the setting that does not divide."""
  total = global_batch_size(config)
  if data_parallel < 1:
    raise ValueError(f"data-parallel size {data_parallel}; expected at least 1")
  if total % data_parallel:
    raise ValueError(
      f"global_batch_size={total} does not split over the mesh's {data_parallel} "
      "data-parallel shards (data x fsdp): use a mesh whose data x fsdp divides it, "
      "or move devices to the tensor axis"
    )
  per_shard = total // data_parallel
  micro = int(config.get("micro_batch_size", 0) or 0)
  accum = int(config.get("grad_accum_steps", 1) or 1)
  if micro:
    if per_shard % micro:
      raise ValueError(
        f"micro_batch_size={micro} does not divide the {per_shard} rows each of the "
        f"{data_parallel} data-parallel shards gets of global_batch_size={total}"
      )
    derived = per_shard // micro
    if accum not in (1, derived):
      raise ValueError(
        f"grad_accum_steps={accum} contradicts micro_batch_size={micro} (which gives {derived}); set one of them"
      )
    accum = derived
  elif per_shard % accum:
    raise ValueError(
      f"grad_accum_steps={accum} does not divide the {per_shard} rows each of the "
      f"{data_parallel} data-parallel shards gets of global_batch_size={total}"
    )
  return BatchPlan(total, per_shard // accum, accum, data_parallel)


def data_parallel_size(sharding) -> int:
  """Shards the batch rows are split over: the product of the mesh axes the `act_batch` rule maps
  to (data x fsdp by default)."""
  entry = sharding.spec((ax.ACT_BATCH,))[0]
  names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
  shape = dict(sharding.mesh.shape)
  size = 1
  for name in names:
    size *= int(shape[name])
  return size
