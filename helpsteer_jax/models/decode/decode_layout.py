"""Weight layouts for decoding: the model's own, unrolled layers, or unrolled layers whose input
projections are fused (q, k and v in one matrix, gate and up in another).

Why fuse: at one row a decode step is a chain of matrix-vector products that only stream the
weights, and on a CPU each product also pays a fixed cost for spreading it over the cores. Seven
products per layer become four. Measured on a 2-core CPU (SmolLM2, fp32, 32 steps, best of 8): one
slot decoded at 22.7 ms a step fused against 24.9 unrolled, with the same tokens and cache bit for
bit; 16 slots decoded slower fused (121 ms against 104), where the products are matmuls. So the
engine fuses only for a single slot (sampling/engine_api.py). The fused blocks keep the blocks'
interface (`project_qkv`, `project_out`, the MLP call), so every forward of the model runs on them.

Conversions are kept per model (weakly: a model that is dropped frees its converted copy) and
redone when any of the model's weight arrays is no longer the one converted, so repeated calls on
one model (`hj.generate` in a loop) convert once, and a policy updated in training is never
decoded with stale weights.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
from flax import nnx

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.layers import Attention, SwiGLU, contract_last
from helpsteer_jax.models.llama import Llama, with_unrolled_layers

LAYOUTS = ("model", "unrolled", "switched", "fused")


class FusedAttention(nnx.Module):
  """`Attention` with q, k and v in one matrix qkv [D, (N + 2K) H]; o [N, H, D] is the original's."""

  def __init__(self, attn: Attention, config: LlamaConfig):
    d, n, k, h = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
    self.qkv_proj = nnx.Param(
      jnp.concatenate(
        [attn.q_proj[...].reshape(d, n * h), attn.k_proj[...].reshape(d, k * h), attn.v_proj[...].reshape(d, k * h)],
        axis=1,
      )
    )
    self.o_proj = attn.o_proj

  def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [B, T, D] -> q [B, T, N, H], k and v [B, T, K, H], by one product."""
    b, t, _ = x.shape
    n, k, h = self.num_heads, self.num_kv_heads, self.head_dim
    qkv = contract_last(x, self.qkv_proj[...].astype(x.dtype))  # [B, T, (N + 2K) H]
    return (
      qkv[..., : n * h].reshape(b, t, n, h),
      qkv[..., n * h : (n + k) * h].reshape(b, t, k, h),
      qkv[..., (n + k) * h :].reshape(b, t, k, h),
    )

  def project_out(self, o: jax.Array) -> jax.Array:
    """o [B, T, N, H] -> [B, T, D]."""
    return contract_last(o, self.o_proj[...].astype(o.dtype), dims=2)


class FusedSwiGLU(nnx.Module):
  """`SwiGLU` with gate and up in one matrix gate_up [D, 2F]; down [F, D] is the original's."""

  def __init__(self, mlp: SwiGLU):
    self.intermediate_size = mlp.gate_proj[...].shape[-1]
    self.gate_up_proj = nnx.Param(jnp.concatenate([mlp.gate_proj[...], mlp.up_proj[...]], axis=1))
    self.down_proj = mlp.down_proj

  def __call__(self, x: jax.Array) -> jax.Array:
    dt, f = x.dtype, self.intermediate_size
    gate_up = contract_last(x, self.gate_up_proj[...].astype(dt))  # [B, T, 2F]
    return contract_last(jax.nn.silu(gate_up[..., :f]) * gate_up[..., f:], self.down_proj[...].astype(dt))


def with_fused_projections(model: Llama) -> Llama:
  """The model with unrolled layers whose input projections are fused, on one device (the fused
  matrices have no sharding rules). The fused matrices are new arrays; the rest are shared with
  the unrolled model."""
  if model.sharding is not None and model.sharding.mesh.size > 1:
    raise ValueError(
      "fused projections are for a single device; the model is sharded over "
      f"{model.sharding.mesh.size} devices (use the unrolled layout)"
    )
  unrolled = with_unrolled_layers(model)
  graphdef, state = nnx.split(unrolled)
  fused = nnx.merge(graphdef, state)  # a new module over the same arrays
  assert isinstance(fused.layers, nnx.List)  # unrolled above
  for block in fused.layers:
    assert isinstance(block.attn, Attention) and isinstance(block.mlp, SwiGLU)  # the model's own, not yet fused
    block.attn = FusedAttention(block.attn, fused.config)
    block.mlp = FusedSwiGLU(block.mlp)
  return fused


def with_switched_layers(model: Llama) -> Llama:
  """The model over the same arrays as its unrolled copy, whose decode steps and prefill chunks run
  the layers as one compiled body that reads each layer's matrices in place (models/decode/layer_switch.py),
  on one device."""
  if model.sharding is not None and model.sharding.mesh.size > 1:
    raise ValueError(
      "switched layers are for a single device; the model is sharded over "
      f"{model.sharding.mesh.size} devices (use the model or unrolled layout)"
    )
  graphdef, state = nnx.split(with_unrolled_layers(model))
  switched = nnx.merge(graphdef, state)  # a new module over the same arrays
  switched.config = switched.config.replace(switch_layers=True)
  return switched


def _weights(model: Llama) -> list[jax.Array]:
  return [var[...] for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param))]


class DecodeLayouts:
  """Converted copies of models for decoding, one per (model, layout), redone when the model's
  weights change (see the module docstring)."""

  def __init__(self):
    self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

  def get(self, model: Llama, layout: str) -> Llama:
    if layout not in LAYOUTS:
      raise ValueError(f"decode layout={layout!r}; expected one of {LAYOUTS}")
    if layout == "model" or (layout == "unrolled" and not model.config.scan_layers):
      return model
    weights = _weights(model)
    kept = self._kept.setdefault(model, {})
    if layout in kept:
      refs, converted = kept[layout]
      if len(refs) == len(weights) and all(r() is w for r, w in zip(refs, weights)):
        return converted
    if layout == "fused":  # built on the kept unrolled copy: both share all but the fused arrays
      converted = with_fused_projections(self.get(model, "unrolled"))
    elif layout == "switched":  # the kept unrolled copy's arrays, run by a switching scan
      converted = with_switched_layers(self.get(model, "unrolled"))
    else:
      converted = with_unrolled_layers(model)
    kept[layout] = ([weakref.ref(w) for w in weights], converted)
    return converted


# One per process, shared by every engine: conversions depend only on the model and its weights.
decode_layouts = DecodeLayouts()
