"""Reward-model training with the shared step: a tiny model learns a synthetic preference, the
regression loss masks missing labels, and a sharded step equals one device's."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.create import create_sharded_module
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.parallel.mesh import make_mesh
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.train.loop import batch_sharding
from helpsteer_jax.train.optimizer import make_optimizer
from helpsteer_jax.train.reward import bradley_terry_step_loss, regression_step_loss
from helpsteer_jax.train.state import init_state, train_state_shardings
from helpsteer_jax.train.step import make_train_step

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

CONFIG = get_preset("tiny", vocab_size=64, num_heads=4, num_kv_heads=2)
GOOD = 5  # the token the synthetic preference rewards
T = 16


def preference_pairs(n: int, seed: int) -> dict[str, np.ndarray]:
  """Chosen responses contain the GOOD token 3-5 times, rejected ones never; lengths vary and rows
  are right-padded."""
  rng = np.random.default_rng(seed)
  batch = {k: np.zeros((n, T), np.int32) for k in ("chosen_input_ids", "rejected_input_ids")}
  for side in ("chosen", "rejected"):
    batch[f"{side}_input_mask"] = np.zeros((n, T), bool)
  for i in range(n):
    for side in ("chosen", "rejected"):
      length = rng.integers(8, T + 1)
      ids = rng.integers(10, CONFIG.vocab_size, size=length)
      if side == "chosen":
        ids[rng.choice(length, size=rng.integers(3, 6), replace=False)] = GOOD
      batch[f"{side}_input_ids"][i, :length] = ids
      batch[f"{side}_input_mask"][i, :length] = True
  batch["label_magnitude"] = rng.integers(1, 4, size=n).astype(np.float32)
  batch["example_mask"] = np.ones(n, np.float32)
  return batch


def optim(lr=3e-3):
  return ml_collections.ConfigDict(
    dict(
      learning_rate=lr,
      warmup_steps=5,
      schedule="constant",
      final_lr_fraction=1.0,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      grad_clip_norm=1.0,
    )
  )


def setup(sharding, loss, lr=3e-3, num_outputs=1, steps=100):
  model = create_sharded_module(
    lambda rngs, ctx: RewardModel(CONFIG, num_outputs, rngs=rngs, sharding=ctx), sharding, seed=0
  )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer, schedule = make_optimizer(optim(lr), steps, params)
  shardings = train_state_shardings(params, optimizer, sharding)
  with jax.set_mesh(sharding.mesh):
    state = jax.jit(lambda p: init_state(p, optimizer), out_shardings=shardings)(params)
  step = jax.jit(
    make_train_step(graphdef, rest, loss, optimizer, schedule),
    in_shardings=(shardings, None, NamedSharding(sharding.mesh, PartitionSpec())),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )
  return graphdef, rest, state, step


def put(batch, sharding):
  return {k: jax.device_put(v, batch_sharding(sharding, v.ndim)) for k, v in batch.items()}


def test_tiny_reward_model_learns_a_synthetic_preference():
  sharding = ShardingContext(make_mesh((1, 1, 1), jax.devices()[:1]))
  loss = functools.partial(bradley_terry_step_loss, kind="scaled")
  graphdef, rest, state, step = setup(sharding, loss, steps=60)
  with jax.set_mesh(sharding.mesh):
    for i in range(60):
      state, metrics = step(state, put(preference_pairs(16, seed=i), sharding), jax.random.key(0))
  held_out = preference_pairs(200, seed=10_000)
  model = nnx.merge(graphdef, state.params, rest)
  chosen = model(jnp.asarray(held_out["chosen_input_ids"]), jnp.asarray(held_out["chosen_input_mask"]))[:, 0]
  rejected = model(jnp.asarray(held_out["rejected_input_ids"]), jnp.asarray(held_out["rejected_input_mask"]))[:, 0]
  accuracy = float(jnp.mean(chosen > rejected))
  print(f"held-out pairwise accuracy after 60 steps: {accuracy:.3f} (last train loss {float(metrics['loss']):.3f})")
  assert accuracy >= 0.95


def test_sharded_reward_step_equals_one_device():
  loss = functools.partial(bradley_terry_step_loss, kind="margin")
  results = []
  for shape, devices in (((1, 1, 1), jax.devices()[:1]), ((2, 2, 2), jax.devices())):
    sharding = ShardingContext(make_mesh(shape, devices))
    _, _, state, step = setup(sharding, loss, lr=1e-3)
    with jax.set_mesh(sharding.mesh):
      losses = []
      for i in range(2):
        state, metrics = step(state, put(preference_pairs(8, seed=i), sharding), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    params = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    results.append((losses, params))
  (l1, p1), (l8, p8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  worst = max(float(np.abs(p1[k] - p8[k]).max()) for k in p1)
  print(f"sharded reward step: losses {l8} vs {l1}; max |param diff| {worst:.2e}")
  assert worst < 1e-5


def test_regression_loss_ignores_missing_labels():
  model = RewardModel(CONFIG, 3, rngs=nnx.Rngs(0))
  ids = jnp.asarray(np.random.default_rng(0).integers(10, 64, size=(2, T)), jnp.int32)
  batch = {
    "input_ids": ids,
    "input_mask": jnp.ones((2, T), bool),
    "example_mask": jnp.ones(2),
    "targets": jnp.asarray([[1.0, -100.0, 3.0], [-100.0, -100.0, 2.0]]),
  }
  out = regression_step_loss(model, batch, None)
  pred = np.asarray(model(ids, batch["input_mask"]))
  want = (pred[0, 0] - 1) ** 2 + (pred[0, 2] - 3) ** 2 + (pred[1, 2] - 2) ** 2
  assert float(out.weight) == 3.0
  np.testing.assert_allclose(float(out.total), want, rtol=1e-5)
