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


def test_selection_per_backend_and_fallback():
  assert [ak.resolve("auto", b) for b in ("cpu", "gpu", "tpu")] == ["xla", "cudnn", "pallas"]
  assert ak.resolve("cudnn", "gpu") == "cudnn" and ak.resolve("pallas", "tpu") == "pallas"
  # A kernel the backend lacks falls back to the XLA attention.
  assert ak.resolve("cudnn", "cpu") == "xla" and ak.resolve("pallas", "gpu") == "xla"
  assert ak.resolve("xla", "gpu") == "xla"
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
  monkeypatch.setattr(llama_module, "resolve_attention", lambda impl: "xla_dot_product")
  model = Llama(config.replace(attention_impl="cudnn"), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(reference), atol=1e-4)
