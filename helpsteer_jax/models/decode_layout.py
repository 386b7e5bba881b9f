"""Weight layouts for decoding: the model's own, unrolled layers, or unrolled layers whose input
projections are fused (q, k and v in one matrix, gate and up in another).

Why fuse: at one row a decode step is a chain of matrix-vector products that only stream the
weights, and on a CPU each product also pays a fixed cost for spreading it over the cores. Seven
products per layer become four. Measured on a 2-core CPU (SmolLM2, fp32, 32 steps, best of 8): one
slot decoded at 22.7 ms a step fused against 24.9 unrolled, with the same tokens and cache bit for
bit; 16 slots decoded slower fused (121 ms against 104), where the products are matmuls and the
narrower ones tile better. So the engine fuses only for a single slot (sampling/engine.py).

Conversions are kept per model (weakly: a model that is dropped frees its converted copy) and
redone when any of the model's weight arrays is no longer the one converted, so repeated calls on
one model (`hj.generate` in a loop) convert once, and a policy updated in training is never
decoded with stale weights.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.layers import RMSNorm, apply_rope, contract_last
from helpsteer_jax.models.llama import DecoderBlock, Llama, with_unrolled_layers
from helpsteer_jax.parallel.partitioning import ShardingContext

LAYOUTS = ("model", "unrolled", "fused")


class FusedDecoderBlock(nnx.Module):
  """A `DecoderBlock` for decoding only, with qkv [D, (N + 2K) H] and gate_up [D, 2F] fused; the
  norms, o [N, H, D] and down [F, D] are the block's own arrays."""

  def __init__(self, block: DecoderBlock, config: LlamaConfig):
    d, n, k, h = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
    self.intermediate_size = config.intermediate_size
    self.input_norm: RMSNorm = block.input_norm
    self.post_attention_norm: RMSNorm = block.post_attention_norm
    attn, mlp = block.attn, block.mlp
    self.qkv_proj = nnx.Param(jnp.concatenate(
        [attn.q_proj[...].reshape(d, n * h), attn.k_proj[...].reshape(d, k * h),
         attn.v_proj[...].reshape(d, k * h)], axis=1))
    self.o_proj = attn.o_proj
    self.gate_up_proj = nnx.Param(jnp.concatenate([mlp.gate_proj[...], mlp.up_proj[...]], axis=1))
    self.down_proj = mlp.down_proj

  def __call__(self, *args, **kwargs):
    raise NotImplementedError("a FusedDecoderBlock only decodes (decode); run the model's own layers")

  def decode(
      self,
      x: jax.Array,  # [B, T, D]
      positions: jax.Array,  # [B, T]
      inv_freq: jax.Array,
      sharding: Optional[ShardingContext],
      attend,  # (q [B, T, N, H], k, v [B, T, K, H]) -> (attended [B, T, N, H], carried out)
  ) -> tuple[jax.Array, Any]:
    """`DecoderBlock.decode` with the fused products (single device: `sharding` must be None)."""
    del sharding
    b, t, _ = x.shape
    n, k, h, f = self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
    dt = x.dtype
    qkv = contract_last(self.input_norm(x), self.qkv_proj[...].astype(dt))  # [B, T, (N + 2K) H]
    q = qkv[..., :n * h].reshape(b, t, n, h)
    key = qkv[..., n * h:(n + k) * h].reshape(b, t, k, h)
    value = qkv[..., (n + k) * h:].reshape(b, t, k, h)
    attended, out = attend(apply_rope(q, positions, inv_freq), apply_rope(key, positions, inv_freq), value)
    x = x + contract_last(attended, self.o_proj[...].astype(dt), dims=2)
    gate_up = contract_last(self.post_attention_norm(x), self.gate_up_proj[...].astype(dt))
    hidden = jax.nn.silu(gate_up[..., :f]) * gate_up[..., f:]
    return x + contract_last(hidden, self.down_proj[...].astype(dt)), out


def with_fused_projections(model: Llama) -> Llama:
  """The model with unrolled layers whose input projections are fused, for decoding on one
  device (`decode_slots`; its prefill and full forward are not supported). The fused matrices are
  new arrays; the rest are shared with the unrolled model."""
  if model.sharding is not None and model.sharding.mesh.size > 1:
    raise ValueError("fused projections are for a single device; the model is sharded over "
                     f"{model.sharding.mesh.size} devices (use the unrolled layout)")
  unrolled = with_unrolled_layers(model)
  graphdef, state = nnx.split(unrolled)
  fused = nnx.merge(graphdef, state)  # a new module over the same arrays
  fused.layers = nnx.List([FusedDecoderBlock(block, fused.config) for block in fused.layers])
  return fused


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
    converted = with_fused_projections(model) if layout == "fused" else with_unrolled_layers(model)
    kept[layout] = ([weakref.ref(w) for w in weights], converted)
    return converted


# One per process, shared by every engine: conversions depend only on the model and its weights.
decode_layouts = DecodeLayouts()
