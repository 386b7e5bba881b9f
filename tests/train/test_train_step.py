"""The shared train step: sharded equals one device, accumulation equals one big batch, the loss
ignores prompt tokens, NaN stops with the step named, optimizer schedule and weight-decay mask."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.create import create_sharded_model
from helpsteer_jax.parallel.mesh import make_mesh
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.train.linear_cross_entropy import linear_cross_entropy
from helpsteer_jax.train.loop import NonFiniteLossError, _check_finite, batch_sharding
from helpsteer_jax.train.optimizer import decay_mask, learning_rate_schedule, make_optimizer
from helpsteer_jax.train.sft import sft_loss
from helpsteer_jax.train.state import init_state, train_state_shardings
from helpsteer_jax.train.step import make_train_step

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

CONFIG = get_preset("tiny", vocab_size=128, num_heads=4, num_kv_heads=2)
B, T = 8, 32


def optim_config(**overrides):
  values = dict(
    learning_rate=1e-3,
    warmup_steps=1,
    schedule="cosine",
    final_lr_fraction=0.1,
    b1=0.9,
    b2=0.95,
    eps=1e-8,
    weight_decay=0.1,
    grad_clip_norm=1.0,
  )
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def packed_batch(seed: int = 0) -> dict[str, np.ndarray]:
  """Rows of 2-3 segments; the first half of each segment is prompt (weight 0), then padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, CONFIG.vocab_size, size=(B, T)).astype(np.int32)
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  weights = np.zeros((B, T), np.float32)
  for b in range(B):
    cuts = sorted(rng.choice(np.arange(4, T - 4), size=2, replace=False))
    bounds = [0, cuts[0], cuts[1], T - rng.integers(0, 4)]
    for s in range(3):
      lo, hi = bounds[s], bounds[s + 1]
      seg[b, lo:hi] = s + 1
      pos[b, lo:hi] = np.arange(hi - lo)
      weights[b, lo + (hi - lo) // 2 : hi - 1] = 1.0  # the last token of a segment predicts nothing
  targets = np.where(seg > 0, np.roll(ids, -1, axis=1), 0).astype(np.int32)
  return {"input_ids": ids, "targets": targets, "loss_weights": weights, "segment_ids": seg, "positions": pos}


def run_steps(mesh_shape, devices, num_steps=2, accum=1, batches=None, loss_chunk=0, config=CONFIG):
  sharding = ShardingContext(make_mesh(mesh_shape, devices))
  model = create_sharded_model(config, sharding, seed=0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer, schedule = make_optimizer(optim_config(), 10, params)
  shardings = train_state_shardings(params, optimizer, sharding)
  with jax.set_mesh(sharding.mesh):
    state = jax.jit(lambda p: init_state(p, optimizer), out_shardings=shardings)(params)
    loss = functools.partial(sft_loss, chunk=loss_chunk)
    step = jax.jit(
      make_train_step(graphdef, rest, loss, optimizer, schedule, accum),
      in_shardings=(shardings, None, NamedSharding(sharding.mesh, PartitionSpec())),
      out_shardings=(shardings, None),
      donate_argnums=(0,),
    )
    losses = []
    for i in range(num_steps):
      batch = batches[i] if batches else packed_batch(i)
      batch = {k: jax.device_put(v, batch_sharding(sharding, v.ndim)) for k, v in batch.items()}
      state, metrics = step(state, batch, jax.random.key(0))
      losses.append(float(metrics["loss"]))
  return losses, state, shardings


def flat_params(state):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}


@pytest.mark.parametrize("loss_chunk", [0, 8])
def test_sharded_step_equals_one_device(loss_chunk):
  """Whole-row logits, and the fused chunked loss with vocabulary-sharded logits blocks."""
  devices = jax.devices()
  assert len(devices) == 8, "conftest sets 8 fake CPU devices"
  losses_1, state_1, _ = run_steps((1, 1, 1), devices[:1], loss_chunk=loss_chunk)
  losses_8, state_8, shardings = run_steps((2, 2, 2), devices, loss_chunk=loss_chunk)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  one, eight = flat_params(state_1), flat_params(state_8)
  worst = max(float(np.abs(one[k] - eight[k]).max()) for k in one)
  print(f"sharded (2,2,2) vs one device after 2 steps: losses {losses_8} vs {losses_1}, max |param diff| {worst:.2e}")
  assert worst < 1e-5
  # The parameters really are split: the MLP over tensor, the model width over fsdp.
  up = state_8.params["layers"]["mlp"]["up_proj"][...]
  assert up.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  # Adam moments follow their parameter's sharding.
  mu = state_8.opt_state[1][0].mu["layers"]["mlp"]["up_proj"][...]
  assert mu.sharding.spec == up.sharding.spec


def test_gradient_accumulation_equals_full_batch():
  devices = jax.devices()[:1]
  batches = [packed_batch(0), packed_batch(1)]
  full, state_full, _ = run_steps((1, 1, 1), devices, batches=batches)
  accumulated, state_acc, _ = run_steps((1, 1, 1), devices, accum=4, batches=batches)
  np.testing.assert_allclose(accumulated, full, rtol=1e-5)
  a, b = flat_params(state_full), flat_params(state_acc)
  assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5


def test_prompt_tokens_get_no_gradient():
  """Changing the targets where loss_weights is 0 (prompt, padding, segment ends) changes nothing;
  the gradient of the loss w.r.t. those positions' logits is exactly zero."""
  model = create_sharded_model(CONFIG, None, seed=0)
  batch = {k: jnp.asarray(v) for k, v in packed_batch(0).items()}
  off = batch["loss_weights"] == 0
  scrambled = dict(batch, targets=jnp.where(off, (batch["targets"] + 7) % CONFIG.vocab_size, batch["targets"]))

  def loss(m, b):
    return sft_loss(m, b, jax.random.key(0)).total

  g1 = nnx.grad(loss)(model, batch)
  g2 = nnx.grad(loss)(model, scrambled)
  for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # d loss / d logits vanishes at every unweighted position.
  hidden, _ = model.hidden_states(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])
  logits = model.logits(hidden)

  def from_logits(lg):
    nll = jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, batch["targets"][..., None], -1)[..., 0]
    return jnp.sum(nll * batch["loss_weights"])

  dlogits = jax.grad(from_logits)(logits)
  assert float(jnp.abs(dlogits[off]).max()) == 0.0
  assert float(jnp.abs(dlogits[~off]).max()) > 0.0


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_equals_whole(tied):
  """The fused chunked loss (gradients computed in its forward) against autodiff of whole logits."""
  model = create_sharded_model(CONFIG.replace(tie_word_embeddings=tied), None, seed=0)
  batch = {k: jnp.asarray(v) for k, v in packed_batch(3).items()}
  whole = sft_loss(model, batch, jax.random.key(0))
  chunked = sft_loss(model, batch, jax.random.key(0), chunk=8)
  np.testing.assert_allclose(float(chunked.total), float(whole.total), rtol=1e-5)
  assert float(chunked.metrics["token_accuracy"]) == float(whole.metrics["token_accuracy"])
  g_whole = nnx.grad(lambda m: sft_loss(m, batch, None).total)(model)
  g_chunk = nnx.grad(lambda m: sft_loss(m, batch, None, chunk=8).total)(model)
  for x, y in zip(jax.tree.leaves(g_whole), jax.tree.leaves(g_chunk)):
    # fp32 sums in another order: errors of ~1e-7 of the leaf's largest gradient.
    scale = max(1.0, float(jnp.abs(x).max()))
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6 * scale)


def test_chunked_loss_rejects_bad_arguments():
  hidden, head = jnp.zeros((2, 12, 4)), jnp.zeros((16, 4))
  targets, weights = jnp.zeros((2, 12), jnp.int32), jnp.ones((2, 12))
  with pytest.raises(ValueError, match="multiple of loss chunk 5"):
    linear_cross_entropy(hidden, head, targets, weights, vocab_axis=0, chunk=5)
  with pytest.raises(ValueError, match="vocab_axis=2"):
    linear_cross_entropy(hidden, head, targets, weights, vocab_axis=2, chunk=4)


def test_non_finite_loss_names_the_step():
  with pytest.raises(NonFiniteLossError, match="step 17"):
    _check_finite(17, {"loss": float("nan"), "grad_norm": 1.0})
  _check_finite(3, {"loss": 1.0, "grad_norm": 2.0})


def test_bf16_compute_with_fp32_master_weights():
  """bf16 activations and matmuls, fp32 parameters and AdamW moments: the state stays fp32, and
  two steps give the all-fp32 run's losses (2%) and updates in the same direction."""
  mixed = CONFIG.replace(dtype="bfloat16", param_dtype="float32")
  devices = jax.devices()[:1]
  losses16, state16, _ = run_steps((1, 1, 1), devices, config=mixed)
  losses32, state32, _ = run_steps((1, 1, 1), devices)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state16.params))
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state16.opt_state))
  print(f"losses bf16 compute {losses16}, fp32 {losses32}")
  np.testing.assert_allclose(losses16, losses32, rtol=2e-2)
  start = flat_params(run_steps((1, 1, 1), devices, num_steps=0)[1])
  p16, p32 = flat_params(state16), flat_params(state32)
  for k in p32:  # the two updates point the same way (AdamW's per-element steps amplify bf16 noise)
    u16, u32 = (p16[k] - start[k]).ravel(), (p32[k] - start[k]).ravel()
    cosine = float(u16 @ u32 / (np.linalg.norm(u16) * np.linalg.norm(u32)))
    print(f"{k}: cosine of the bf16-compute and fp32 updates {cosine:.3f}")
    assert cosine > 0.99, k


def test_schedules_and_decay_mask():
  cosine = learning_rate_schedule(1.0, 100, warmup_steps=10, kind="cosine", final_fraction=0.1)
  assert float(cosine(0)) == 0.0 and abs(float(cosine(10)) - 1.0) < 1e-6
  assert abs(float(cosine(100)) - 0.1) < 1e-6 and 0.1 < float(cosine(55)) < 1.0
  constant = learning_rate_schedule(1.0, 100, warmup_steps=4, kind="constant")
  assert float(constant(2)) == 0.5 and float(constant(80)) == 1.0
  with pytest.raises(ValueError, match="schedule"):
    learning_rate_schedule(1.0, 10, kind="exponential")
  # NeMo's CosineAnnealing as SteerLM's recipe uses it: 1 warmup step to 6e-6, cosine to 5e-6,
  # held for the last 200 steps.
  held = learning_rate_schedule(6e-6, 316, warmup_steps=1, kind="cosine", final_fraction=5 / 6, constant_steps=200)
  assert abs(float(held(1)) - 6e-6) < 1e-12 and 5e-6 < float(held(50)) < 6e-6
  assert all(abs(float(held(s)) - 5e-6) < 1e-12 for s in (116, 200, 315))
  model = create_sharded_model(CONFIG, None, seed=0)
  _, params = nnx.split(model, nnx.Param)
  mask = decay_mask(params)
  assert not mask["final_norm"]["scale"].get_value() and not mask["layers"]["input_norm"]["scale"].get_value()
  assert mask["layers"]["mlp"]["up_proj"].get_value() and mask["embed"].get_value()
