"""Sharded forward on 8 fake CPU devices, mesh (2, 2, 2) over (data, fsdp, tensor)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from helpsteer_jax.checkpoints.hf import load_hf_model, save_hf_model
from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.create import create_sharded_model
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.mesh import make_mesh, resolve_mesh_shape
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.parallel.rules import DEFAULT_RULES, logical_to_spec

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = [pytest.mark.entry, pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (fake) devices")]

# What DEFAULT_RULES say for each parameter of the tiny model (scan layout: leading layer axis).
EXPECTED_SPECS = {
  ("embed",): P("tensor", "fsdp"),
  ("lm_head",): P("fsdp", "tensor"),
  ("final_norm", "scale"): P(None),
  ("layers", "attn", "q_proj"): P(None, "fsdp", "tensor", None),
  ("layers", "attn", "k_proj"): P(None, "fsdp", "tensor", None),
  ("layers", "attn", "v_proj"): P(None, "fsdp", "tensor", None),
  ("layers", "attn", "o_proj"): P(None, "tensor", None, "fsdp"),
  ("layers", "mlp", "gate_proj"): P(None, "fsdp", "tensor"),
  ("layers", "mlp", "up_proj"): P(None, "fsdp", "tensor"),
  ("layers", "mlp", "down_proj"): P(None, "tensor", "fsdp"),
  ("layers", "input_norm", "scale"): P(None, None),
  ("layers", "post_attention_norm", "scale"): P(None, None),
}


@pytest.fixture(scope="module")
def ctx():
  return ShardingContext(make_mesh((2, 2, 2)))


def _forward(model, ids):
  graphdef, state = nnx.split(model)
  return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, ids)


def _assert_specs(model):
  flat = {tuple(path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  assert set(flat) == set(EXPECTED_SPECS)
  for path, spec in EXPECTED_SPECS.items():
    assert flat[path].get_value().sharding.spec == spec, path


def test_sharded_logits_equal_single_device(ctx):
  config = get_preset("tiny")
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 512, (4, 16)), jnp.int32)
  sharded = create_sharded_model(config, ctx, seed=5)
  _assert_specs(sharded)
  single = Llama(config, rngs=nnx.Rngs(5))
  logits = _forward(sharded, ids)
  assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")
  np.testing.assert_allclose(logits, single(ids), atol=1e-5)


def test_checkpoint_streams_onto_the_mesh(ctx, tmp_path):
  config = get_preset("tiny")
  single = Llama(config, rngs=nnx.Rngs(7))
  save_hf_model(single, str(tmp_path), max_shard_size=200_000, show_progress=False)
  sharded = load_hf_model(str(tmp_path), sharding=ctx, show_progress=False)
  _assert_specs(sharded)
  ids = jnp.asarray(np.random.RandomState(1).randint(0, 512, (4, 16)), jnp.int32)
  np.testing.assert_allclose(_forward(sharded, ids), single(ids), atol=1e-5)


def test_rules_drop_axes_that_do_not_divide(ctx):
  # SmolLM2 has 3 KV heads: they stay unsharded on a tensor axis of 2, the width is still FSDP.
  assert ctx.spec(("embed", "kv_heads", "head_dim"), (576, 3, 64)) == P("fsdp", None, None)
  assert logical_to_spec(("act_batch", "act_seq"), DEFAULT_RULES) == P(("data", "fsdp"), None)
  with pytest.raises(KeyError, match="no sharding rule"):
    logical_to_spec(("nonsense",), DEFAULT_RULES)


def test_mesh_shape_resolution():
  assert resolve_mesh_shape((1, -1, 2), 8) == (1, 4, 2)
  assert make_mesh((-1, 1, 1)).shape == {"data": 8, "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match="needs 4 devices"):
    resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(ValueError, match="at most one entry may be -1"):
    resolve_mesh_shape((-1, -1, 2), 8)


def test_sampler_on_the_mesh_gives_the_same_tokens(ctx):
  from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens

  config = get_preset("tiny")
  prompts = [[5, 6, 7], list(range(1, 12)), [42, 43], [9] * 5]
  for settings in (
    SamplingSettings(max_new_tokens=12),
    SamplingSettings(max_new_tokens=12, temperature=0.8, top_p=0.9),
  ):
    single = sample_tokens(Llama(config, rngs=nnx.Rngs(2)), prompts, settings, n=2, seed=4)
    sharded = sample_tokens(create_sharded_model(config, ctx, seed=2), prompts, settings, n=2, seed=4)
    assert sharded == single
