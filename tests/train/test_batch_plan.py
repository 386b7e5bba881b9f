"""The global batch of 128 on any mesh: micro-batch x accumulation x data-parallel shards derived,
and a split that does not divide refused before the model is built or anything compiled."""

import pytest
from ml_collections import ConfigDict

from helpsteer_jax.parallel.mesh import make_mesh
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.parallel.rules import DEFAULT_RULES
from helpsteer_jax.train.batch_plan import data_parallel_size, plan_batch
from helpsteer_jax.train.config import default_train_config
from helpsteer_jax.train.loop import train_and_evaluate


def config(global_batch=128, micro=0, accum=1, trainer="sft", samples=4):
  c = default_train_config()
  c.trainer = trainer
  c.data.batch_size = global_batch // samples if trainer == "rloo" else global_batch
  c.global_batch_size = global_batch
  c.micro_batch_size = micro
  c.grad_accum_steps = accum
  c.rloo = ConfigDict({"num_samples": samples})
  return c


@pytest.mark.parametrize(
  "data_parallel, micro, accum, want",
  [
    (1, 0, 1, (128, 1)),  # one device, one pass
    (1, 1, 1, (1, 128)),  # one device, micro-batch 1: 128 accumulation steps
    (8, 1, 1, (1, 16)),  # a (1, 8, 8) mesh: docs/70b.md's 16 accumulation steps
    (64, 1, 1, (1, 2)),
    (128, 1, 1, (1, 1)),
    (8, 0, 4, (4, 4)),  # accumulation given, micro-batch derived
    (8, 4, 4, (4, 4)),  # both, agreeing
  ],
)
def test_global_batch_128_on_every_mesh(data_parallel, micro, accum, want):
  plan = plan_batch(config(micro=micro, accum=accum), data_parallel)
  assert (plan.micro_batch_size, plan.grad_accum_steps) == want
  assert plan.micro_batch_size * plan.grad_accum_steps * plan.data_parallel == plan.global_batch_size == 128


def test_rloo_global_batch_counts_samples():
  plan = plan_batch(config(trainer="rloo", micro=1), 32)  # 32 prompts x 4 samples
  assert (plan.global_batch_size, plan.grad_accum_steps) == (128, 4)


@pytest.mark.parametrize(
  "data_parallel, micro, accum, match",
  [
    (256, 1, 1, "does not split over the mesh's 256 data-parallel shards"),
    (48, 0, 1, "does not split over the mesh's 48"),
    (8, 3, 1, "micro_batch_size=3 does not divide the 16 rows"),
    (8, 0, 3, "grad_accum_steps=3 does not divide the 16 rows"),
    (8, 4, 2, "grad_accum_steps=2 contradicts micro_batch_size=4"),
  ],
)
def test_a_split_that_does_not_divide_is_refused(data_parallel, micro, accum, match):
  with pytest.raises(ValueError, match=match):
    plan_batch(config(micro=micro, accum=accum), data_parallel)


def test_stated_global_batch_must_match_the_data():
  c = config()
  c.data.batch_size = 64
  with pytest.raises(ValueError, match="global_batch_size=128 but data.batch_size = 64"):
    plan_batch(c, 1)


def test_data_parallel_size_follows_the_batch_rule():
  mesh = make_mesh((2, 2, 2))  # the 8 fake devices of conftest
  assert data_parallel_size(ShardingContext(mesh, DEFAULT_RULES)) == 4  # data x fsdp


class _NeverBuilt:
  """A task whose every part fails: the loop must stop before reaching any of them."""

  def __getattr__(self, name):
    raise AssertionError(f"the loop reached task.{name} before checking the batch split")


def test_the_loop_refuses_the_split_before_building_anything(tmp_path):
  c = config(global_batch=12, micro=1)
  c.mesh.shape = (1, -1, 1)  # 8 devices: 12 rows do not split
  with pytest.raises(ValueError, match="global_batch_size=12 does not split over the mesh's 8"):
    train_and_evaluate(c, str(tmp_path), _NeverBuilt())
  assert not (tmp_path / "checkpoints").exists()
