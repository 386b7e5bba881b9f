"""Attention kernel selection and its XLA fallback (kernels themselves run on GPU/TPU only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpsteer_jax.models import attention_kernels as ak
from helpsteer_jax.models import llama as llama_module
from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.layers import grouped_query_attention
from helpsteer_jax.models.llama import Llama

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_selection_per_backend_and_fallback():
  assert [ak.resolve("auto", b) for b in ("cpu", "gpu", "tpu")] == ["xla", "cudnn", "pallas"]
  assert ak.resolve("cudnn", "gpu") == "cudnn" and ak.resolve("pallas", "tpu") == "pallas"
  # A kernel the backend lacks falls back to the XLA attention.
  assert ak.resolve("cudnn", "cpu") == "xla" and ak.resolve("pallas", "gpu") == "xla"
  assert ak.resolve("xla", "gpu") == "xla"
  # cuDNN's flash attention takes 16-bit floats only: fp32 activations keep the XLA attention.
  assert ak.resolve("auto", "gpu", jnp.bfloat16) == "cudnn" and ak.resolve("cudnn", "gpu", jnp.float16) == "cudnn"
  assert ak.resolve("auto", "gpu", jnp.float32) == "xla" and ak.resolve("cudnn", "gpu", jnp.float32) == "xla"
  assert ak.resolve("auto", "tpu", jnp.float32) == "pallas"
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    ak.resolve("flash", "cpu")
  with pytest.raises(ValueError, match="attention_impl"):
    get_preset("tiny", attention_impl="flash")


def test_dot_product_call_matches_the_xla_attention_under_right_padding():
  # The cuDNN call with implementation="xla": same layouts, lengths and scale as on a GPU.
  b, t, n, k, h = 3, 24, 4, 2, 16
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (b, t, n, h))
  kk = jax.random.normal(keys[1], (b, k, t, h))
  v = jax.random.normal(keys[2], (b, k, t, h))
  lengths = jnp.asarray([24, 10, 1])
  real = jnp.arange(t)[None, :] < lengths[:, None]
  mask = jnp.tril(jnp.ones((t, t), bool))[None] & real[:, None, :] & real[:, :, None]
  assert ak.lengths_if_padding_mask(mask) is not None
  want = grouped_query_attention(q, [(kk, v, mask)], causal=True)
  got = ak.kernel_attention(q, kk, v, lengths, "xla_dot_product")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_the_choice_does_not_change_logits(monkeypatch):
  config = get_preset("tiny")
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 500, size=(2, 20)))
  reference = Llama(config, rngs=nnx.Rngs(0))(ids)
  # On CPU every explicit kernel falls back: the logits are the XLA path's.
  for impl in ("cudnn", "pallas", "auto"):
    model = Llama(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(reference))
  # Routed through the kernel call (its XLA implementation here): within fp32 tolerance.
  monkeypatch.setattr(llama_module, "resolve_attention", lambda impl, dtype=None: "xla_dot_product")
  model = Llama(config.replace(attention_impl="cudnn"), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(reference), atol=1e-4)


def test_an_fp32_model_on_a_gpu_keeps_the_xla_attention(monkeypatch):
  # As on a GPU backend: auto would pick cuDNN, which refuses fp32 inputs; the model must not
  # route its fp32 attention there (on this CPU the cuDNN call would fail outright).
  config = get_preset("tiny")
  ids = jnp.asarray(np.random.default_rng(1).integers(1, 500, size=(2, 16)))
  reference = Llama(config.replace(attention_impl="xla"), rngs=nnx.Rngs(0))(ids)
  monkeypatch.setattr(ak.jax, "default_backend", lambda: "gpu")
  for impl in ("auto", "cudnn"):
    model = Llama(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(reference))


@pytest.mark.parametrize("scan_layers", [True, False])
@pytest.mark.parametrize("remat", ["full", "dots_no_batch_attention"])
def test_the_kernel_route_trains_under_remat(monkeypatch, scan_layers, remat):
  # The kernel's name must not reach jax.checkpoint as an argument (a string is no JAX value):
  # gradients through the kernel call under each remat policy match the XLA attention's.
  config = get_preset("tiny", scan_layers=scan_layers, remat_policy=remat)
  ids = jnp.asarray(np.random.default_rng(2).integers(1, 500, size=(2, 12)))

  def grads(impl):
    model = Llama(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.sum(jax.nn.log_softmax(nnx.merge(graphdef, p)(ids))[..., 7])
    return jax.tree.leaves(jax.jit(jax.grad(loss))(params))

  want = grads("xla")
  monkeypatch.setattr(llama_module, "resolve_attention", lambda impl, dtype=None: "xla_dot_product")
  got = grads("cudnn")
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-4, rtol=2e-4)
