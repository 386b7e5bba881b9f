"""Llama-3 decoder in Flax NNX.

`model(ids)` / `hidden_states` is the forward of training, scoring and the reference logits (full
sequences, optional packing via `segment_ids`). Generation runs on a slot cache, one sample per
slot (models/decode/): `prefill_chunk` writes a prompt chunk by chunk, `decode_slots` steps every
slot at its own position.

Every path runs the layers through one iterator, `over_layers`, whose strategy follows the layout:
stacked layers run with `lax.scan` (`config.scan_layers`, the default: one compiled layer, fast on
every backend), switched ones with a scan that switches on the layer (models/decode/layer_switch.py),
a list unrolled.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from helpsteer_jax.models.attention_kernels import kernel_attention
from helpsteer_jax.models.attention_kernels import resolve as resolve_attention
from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.decode.chunk_attention import chunk_attention
from helpsteer_jax.models.decode.decode_attention import (
  CacheRead,
  num_blocks,
  per_slot_decode_attention,
  ragged_decode_attention,
)
from helpsteer_jax.models.decode.layer_switch import switched_layers
from helpsteer_jax.models.decode.paged_decode import paged_decode_attention
from helpsteer_jax.models.decode.paged_decode import resolve as resolve_decode_attention
from helpsteer_jax.models.decode.prefix_attention import shared_prefix_decode_attention
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.layers import (
  Attention,
  AttentionProjections,
  FeedForward,
  RMSNorm,
  SwiGLU,
  apply_rope,
  contract_last,
  contract_last_with_rows,
  grouped_query_attention,
  make_param,
  rope_inverse_frequencies,
)
from helpsteer_jax.parallel import axes as ax
from helpsteer_jax.parallel.partitioning import ShardingContext, constrain

_REMAT_POLICIES = {
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  "save_qkv_proj": jax.checkpoint_policies.save_only_these_names("query", "key", "value"),
  "dots_no_batch_attention": jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names("attention_out", "attention_lse"),
  ),
}

_HIDDEN_AXES = (ax.ACT_BATCH, ax.ACT_SEQ, ax.ACT_EMBED)


class DecoderBlock(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x))."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs, stack: Sequence[int] = ()):
    dt = config.weight_dtype
    self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dt, rngs, stack)
    # decode_layout.with_fused_projections swaps in fused projections with the same interface.
    self.attn: AttentionProjections = Attention(config, rngs, stack)
    self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dt, rngs, stack)
    self.mlp: FeedForward = SwiGLU(config, rngs, stack)

  def __call__(
    self,
    x: jax.Array,  # [B, T, D]
    positions: jax.Array,  # [B, T]
    mask: jax.Array,  # [B, T, T]: which keys each query sees (causal is applied on top)
    inv_freq: jax.Array,  # [H/2]
    sharding: Optional[ShardingContext],
    kernel: Optional[tuple[str, jax.Array]] = None,  # (attention kernel, key lengths [B])
  ) -> jax.Array:
    """The block output [B, T, D] over a whole sequence."""
    q, k, v = self.attn.project_qkv(self.input_norm(x))
    q = checkpoint_name(apply_rope(q, positions, inv_freq), "query")
    k = checkpoint_name(apply_rope(k, positions, inv_freq), "key")
    v = checkpoint_name(v, "value")
    q = constrain(q, (ax.ACT_BATCH, ax.ACT_SEQ, ax.ACT_HEADS, None), sharding)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, H]
    # The mask never lets a query see a later key (`hidden_states` ANDs it with causal).
    if kernel is not None:
      attended = kernel_attention(q, k, v, kernel[1], kernel[0])
    else:
      attended = grouped_query_attention(q, [(k, v, mask)], causal=True)
    x = x + self.attn.project_out(attended)
    x = constrain(x, _HIDDEN_AXES, sharding)
    x = x + self.mlp(self.post_attention_norm(x))
    return constrain(x, _HIDDEN_AXES, sharding)

  def decode(
    self,
    x: jax.Array,  # [B, T, D]
    positions: jax.Array,  # [B, T]
    inv_freq: jax.Array,
    sharding: Optional[ShardingContext],
    attend,  # (q [B, T, N, H], k, v [B, T, K, H]) -> (attended [B, T, N, H], carried out)
  ) -> tuple[jax.Array, Any]:
    """New tokens against a slot cache (one per slot when decoding, a prompt chunk of one slot
    when prefilling): the block output [B, T, D] and what `attend` returns beside the attention
    (the tokens' keys and values, or the updated cache)."""
    q, k, v = self.attn.project_qkv(self.input_norm(x))
    q = apply_rope(q, positions, inv_freq)  # [B, T, N, H]
    k = apply_rope(k, positions, inv_freq)  # [B, T, K, H]
    attended, out = attend(q, k, v)
    x = x + self.attn.project_out(attended)
    x = constrain(x, _HIDDEN_AXES, sharding)
    x = x + self.mlp(self.post_attention_norm(x))
    return constrain(x, _HIDDEN_AXES, sharding), out


class Llama(nnx.Module):
  """Llama-3 causal LM.  `model(input_ids [B, T]) -> logits [B, T, V]` (fp32)."""

  def __init__(
    self,
    config: LlamaConfig,
    *,
    rngs: nnx.Rngs,
    sharding: Optional[ShardingContext] = None,
    with_lm_head: bool = True,
  ):
    """`with_lm_head=False` builds the trunk only (reward models read hidden states, not logits)."""
    self.config = config
    self.sharding = sharding
    d, dt = config.hidden_size, config.weight_dtype
    self.embed = make_param(rngs, (config.vocab_size, d), (ax.VOCAB, ax.EMBED), dt, fan_in=1)
    self.layers: DecoderBlock | nnx.List[DecoderBlock]  # one stacked block, or a list of blocks when unrolled
    if config.scan_layers:
      self.layers = DecoderBlock(config, rngs, stack=(config.num_layers,))
    else:
      self.layers = nnx.List([DecoderBlock(config, rngs) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(d, config.rms_norm_eps, dt, rngs)
    if with_lm_head and not config.tie_word_embeddings:
      self.lm_head = make_param(rngs, (d, config.vocab_size), (ax.EMBED, ax.VOCAB), dt, fan_in=d)

  # -- public forward ---------------------------------------------------------------------------

  def __call__(
    self,
    input_ids: jax.Array,  # [B, T] int32
    *,
    positions: Optional[jax.Array] = None,  # [B, T]
    segment_ids: Optional[jax.Array] = None,  # [B, T]; 0 = padding, equal ids attend each other
    input_mask: Optional[jax.Array] = None,  # [B, T] bool; False = padding
  ) -> jax.Array:
    """Logits [B, T, V] in fp32."""
    hidden, _ = self.hidden_states(input_ids, positions=positions, segment_ids=segment_ids, input_mask=input_mask)
    return self.logits(hidden)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """hidden [B, T, D] (after the final norm) -> fp32 logits [B, T, V]."""
    dt = hidden.dtype
    if self.config.tie_word_embeddings:
      out = contract_last_with_rows(hidden, self.embed[...].astype(dt))  # BTD,VD->BTV
    else:
      out = contract_last(hidden, self.lm_head[...].astype(dt))  # BTD,DV->BTV
    return self.constrain_logits(out).astype(jnp.float32)

  def output_head(self) -> tuple[jax.Array, int]:
    """(output projection, its vocabulary axis): the embedding [V, D] when tied, else [D, V]."""
    if self.config.tie_word_embeddings:
      return self.embed[...], 0
    return self.lm_head[...], 1

  def constrain_logits(self, logits: jax.Array) -> jax.Array:
    """Places logits [B, T, V] on the mesh (batch, sequence, vocabulary axes)."""
    return constrain(logits, (ax.ACT_BATCH, ax.ACT_SEQ, ax.ACT_VOCAB), self.sharding)

  def hidden_states(
    self,
    input_ids: jax.Array,
    *,
    positions: Optional[jax.Array] = None,
    segment_ids: Optional[jax.Array] = None,
    input_mask: Optional[jax.Array] = None,
    key_lengths: Optional[jax.Array] = None,
  ) -> tuple[jax.Array, None]:
    """Final-norm hidden states [B, T, D] (what the reward heads read), and None (where an earlier
    version returned its cache: callers unpack two values).

    `key_lengths` [B] declares `input_mask` a right-padding mask (position < length), which lets
    an accelerator kernel (`config.attention_impl`, attention_kernels.py) run the attention.
    """
    config = self.config
    b, t = input_ids.shape
    if key_lengths is None and input_mask is None and segment_ids is None:
      key_lengths = jnp.full((b,), t, jnp.int32)  # no padding: every key is real
    if input_mask is None:
      input_mask = jnp.ones((b, t), bool) if segment_ids is None else segment_ids != 0
    input_mask = input_mask.astype(bool)

    causal = jnp.tril(jnp.ones((t, t), bool))
    if positions is None:
      positions = jnp.maximum(jnp.cumsum(input_mask, axis=1) - 1, 0)
    seg = input_mask.astype(jnp.int32) if segment_ids is None else segment_ids
    mask = causal[None] & (seg[:, :, None] == seg[:, None, :]) & input_mask[:, None, :]

    kernel = None
    impl = resolve_attention(config.attention_impl, dtype=config.compute_dtype)
    # A kernel takes the causal attention under a right-padding mask; packed segments and other
    # masks stay on the XLA path.
    if impl != "xla" and segment_ids is None and key_lengths is not None:
      kernel = (impl, key_lengths.astype(jnp.int32))
    inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    x = jnp.take(self.embed[...], input_ids, axis=0).astype(config.compute_dtype)
    x = constrain(x, _HIDDEN_AXES, self.sharding)

    lengths = None if kernel is None else kernel[1]

    def run(graphdef, state, x, layer, cache_kv, thread_cache):
      x = self._block_fn(graphdef, kernel)(state, x, positions, mask, inv_freq, lengths)
      return x, ((), cache_kv)

    x, _, _ = self.over_layers(x, run)
    return self.final_norm(x), None

  def slot_keys_transposed(self, cache_dtype=None) -> bool:
    """Whether a slot cache for this model stores its keys transposed (models/decode/slot_cache.py says
    why): on CPU, where it was measured, unless decode attention is the paged kernel, which reads
    keys [S, H]."""
    dtype = self.config.compute_dtype if cache_dtype is None else cache_dtype
    kernel = resolve_decode_attention(self.config.decode_attention_impl, dtype)
    return jax.default_backend() == "cpu" and kernel != "paged"

  def decode_slots(
    self,
    tokens: jax.Array,  # [B] int32: each slot's last token
    cache: SlotCache,
    active: jax.Array,  # [B] bool: slots that decode (the others' outputs are discarded)
    block: int = 128,
    kernel: Optional[str] = None,
  ) -> tuple[jax.Array, SlotCache]:
    """One decode step of every slot, each at its own position: fp32 logits [B, V] and the cache
    with the tokens appended to the active slots. Attention reads the cache in `block`-position
    blocks, by `kernel` (models/decode/decode_attention.py: "xla", every slot up to the longest active
    one, or "per_slot", each active slot its own blocks; "paged": the TPU kernel,
    models/decode/paged_decode.py; default: `config.decode_attention_impl` resolved for the backend and
    the cache's dtype)."""
    config = self.config
    if kernel is None:
      kernel = resolve_decode_attention(config.decode_attention_impl, cache.k.dtype)
    sharded = self.sharding is not None and self.sharding.mesh.size > 1
    if sharded and kernel == "paged":
      kernel = "xla"  # the kernel is not partitioned over a mesh yet
    if kernel == "per_slot" and (sharded or tokens.shape[0] == 1):
      kernel = "xla"  # it gathers across slots; one slot reads only its own blocks anyway
    positions = cache.lengths[:, None]
    blocks = num_blocks(cache.lengths, active, block)
    inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    x = jnp.take(self.embed[...], tokens[:, None], axis=0).astype(config.compute_dtype)
    x = constrain(x, _HIDDEN_AXES, self.sharding)
    if kernel == "paged":
      if cache.keys_transposed:
        raise ValueError(
          "the paged decode kernel reads keys [S, H]; this slot cache stores them "
          "transposed (make it with keys_transposed=model.slot_keys_transposed())"
        )
      return self._decode_slots_paged(x, positions, inv_freq, cache, active, block)
    transposed = cache.keys_transposed
    if cache.prefix is not None:
      if sharded:
        raise ValueError("a prefix table is for an unsharded cache (its attention gathers across slots)")
      return self._decode_slots_shared(x, positions, inv_freq, cache, active, block)

    def run(graphdef, state, x, layer, cache_kv, thread_cache):
      def attend(q, k, v):  # one token per slot: [B, 1, ...]
        cache_k, cache_v = cache_kv
        read = CacheRead(cache_k, cache_v, layer, block, thread_cache, transposed)
        if kernel == "per_slot":
          attended, cache_kv_out = per_slot_decode_attention(q[:, 0], k[:, 0], v[:, 0], read, cache.lengths, active)
        else:
          attended, cache_kv_out = ragged_decode_attention(q[:, 0], k[:, 0], v[:, 0], read, cache.lengths, blocks)
        return attended[:, None], ((k[:, 0], v[:, 0]), cache_kv_out)

      return nnx.merge(graphdef, state).decode(x, positions, inv_freq, self.sharding, attend)

    # Each layer slices only the cache blocks it reads.
    x, (new_k, new_v), (cache_k, cache_v) = self.over_layers(x, run, (cache.k, cache.v))
    logits = self.logits(self.final_norm(x))[:, 0]
    return logits, cache.replace(k=cache_k, v=cache_v).append(new_k, new_v, active)

  def prefill_chunk(
    self,
    ids: jax.Array,  # [1, T] int32: the chunk's tokens (the last chunk of a prompt right-padded)
    cache: SlotCache,
    slot: jax.Array,  # [] int32
    start: jax.Array,  # [] int32: the chunk's first position (any; usually a multiple of `block`)
    last: jax.Array,  # [] int32: index in the chunk of the hidden state to return
    block: int,  # cache positions read at a time: the prefill's chunk length
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One chunk of slot `slot`'s prompt against the chunks before it, which the cache holds at
    positions [0, start) (models/decode/chunk_attention.py). -> the final-norm hidden state of chunk
    position `last` [1, D] and the chunk's keys and values [L, 1, K, T, H] (the caller writes them
    into the cache, and may keep them for a prompt with the same first start + T tokens and the
    same chunk starts before).
    Padding after a prompt's last token attends only to earlier keys, so it changes no real
    position; its keys lie past the prompt's length, where decoding overwrites them."""
    config = self.config
    positions = (start + jnp.arange(ids.shape[1], dtype=jnp.int32))[None]
    inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    x = jnp.take(self.embed[...], ids, axis=0).astype(config.compute_dtype)
    x = constrain(x, _HIDDEN_AXES, self.sharding)

    def run(graphdef, state, x, layer, cache_kv, thread_cache):
      def attend(q, k, v):
        cache_k, cache_v = cache_kv
        read = CacheRead(cache_k, cache_v, layer, block, thread_cache, cache.keys_transposed)
        attended, cache_kv_out = chunk_attention(q, k, v, read, slot, start)
        return attended, ((k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)), cache_kv_out)  # [1, K, T, H]

      return nnx.merge(graphdef, state).decode(x, positions, inv_freq, self.sharding, attend)

    x, (chunk_k, chunk_v), _ = self.over_layers(x, run, (cache.k, cache.v))
    hidden = jax.lax.dynamic_slice_in_dim(x, last, 1, axis=1)[:, 0]
    return self.final_norm(hidden), chunk_k, chunk_v

  def over_layers(self, x, run, cache_kv: Any = (), carry_cache: bool = False):
    """x through every layer by `run(graphdef, state, x, layer, cache_kv, thread_cache) -> (x,
    (out, cache_kv))` -> x, each layer's `out` stacked [L, ...] (any pytree; () for none), and the
    cache. The layout picks the strategy: stacked layers as a scan, switched layers as a scan that
    switches on the layer (`switch_layers`), a list unrolled.

    The cache: scanned, it is an operand of the scan that every layer reads (`thread_cache`
    False), unless `carry_cache`, for a `run` that writes into it (the paged kernel): then it is
    carried from layer to layer. Unrolled, it is always threaded from layer to layer
    (decode_attention.loop_over_blocks says why)."""
    config = self.config
    if config.scan_layers or config.switch_layers:
      if config.scan_layers:
        graphdef, per_layer = nnx.split(self.layers)
        state_of = lambda rows, layer: rows
      else:
        assert isinstance(self.layers, nnx.List)  # switched layers are unrolled (scan_layers=False)
        graphdef, per_layer, state_of = switched_layers(self.layers)

      def body(carry, layer_in):
        x, cache = carry if carry_cache else (carry, cache_kv)
        rows, layer = layer_in
        x, (out, cache) = run(graphdef, state_of(rows, layer), x, layer, cache, carry_cache)
        return ((x, cache) if carry_cache else x), out

      init = (x, cache_kv) if carry_cache else x
      carry, outs = jax.lax.scan(body, init, (per_layer, jnp.arange(config.num_layers)))
      x, cache_kv = carry if carry_cache else (carry, cache_kv)
      return x, outs, cache_kv
    assert isinstance(self.layers, nnx.List)  # neither scanned nor switched: unrolled
    outs = []
    for i, layer_module in enumerate(self.layers):
      graphdef, state = nnx.split(layer_module)
      x, (out, cache_kv) = run(graphdef, state, x, i, cache_kv, True)
      outs.append(out)
    return x, jax.tree.map(lambda *per_layer: jnp.stack(per_layer), *outs), cache_kv

  def _decode_slots_shared(self, x, positions, inv_freq, cache: SlotCache, active, block):
    """`decode_slots` over a cache with a prefix table: each slot reads its entry's blocks (read once
    for the slots that share them) and then its own row (models/decode/prefix_attention.py)."""
    table = cache.prefix
    assert table is not None
    transposed = cache.keys_transposed
    prefix_lengths, of_slot = table.lengths, table.of_slot

    def run(graphdef, state, x, layer, cache_kv, thread_cache):
      def attend(q, k, v):  # one token per slot: [B, 1, ...]
        cache_k, cache_v, table_k, table_v = cache_kv
        attended, own, shared = shared_prefix_decode_attention(
          q[:, 0],
          k[:, 0],
          v[:, 0],
          CacheRead(cache_k, cache_v, layer, block, thread_cache, transposed),
          CacheRead(table_k, table_v, layer, block, thread_cache, transposed),
          prefix_lengths,
          of_slot,
          cache.lengths,
          active,
        )
        return attended[:, None], ((k[:, 0], v[:, 0]), (*own, *shared))

      return nnx.merge(graphdef, state).decode(x, positions, inv_freq, self.sharding, attend)

    x, (new_k, new_v), (cache_k, cache_v, table_k, table_v) = self.over_layers(
      x, run, (cache.k, cache.v, table.k, table.v)
    )
    logits = self.logits(self.final_norm(x))[:, 0]
    table = dataclasses.replace(table, k=table_k, v=table_v)
    return logits, cache.replace(k=cache_k, v=cache_v, prefix=table).append(new_k, new_v, active)

  def _decode_slots_paged(self, x, positions, inv_freq, cache: SlotCache, active, block):
    """`decode_slots` by the paged kernel: each layer writes its token into the cache it carries,
    then attends over it (the kernel reads only the cache)."""

    def run(graphdef, state, x, layer, cache_kv, thread_cache):
      def attend(q, k, v):  # one token per slot: [B, 1, ...]
        cache_k, cache_v = cache_kv
        attended, new_k, new_v = paged_decode_attention(
          q[:, 0], k[:, 0], v[:, 0], cache_k, cache_v, layer, cache.lengths, active, block
        )
        return attended[:, None], ((), (new_k, new_v))

      return nnx.merge(graphdef, state).decode(x, positions, inv_freq, self.sharding, attend)

    x, _, (cache_k, cache_v) = self.over_layers(x, run, (cache.k, cache.v), carry_cache=True)
    logits = self.logits(self.final_norm(x))[:, 0]
    return logits, cache.replace(k=cache_k, v=cache_v, lengths=cache.lengths + active.astype(jnp.int32))

  # -- layer stacks -----------------------------------------------------------------------------

  def _block_fn(self, graphdef, kernel: Optional[tuple[str, jax.Array]] = None):
    """(block state, x, positions, mask, inv_freq, key lengths) -> block output,
    wrapped in remat. The kernel's name is closed over, not passed: a string is no JAX value, and
    `jax.checkpoint` takes every argument as one."""
    impl = None if kernel is None else kernel[0]

    def run(state, x, positions, mask, inv_freq, key_lengths=None):
      block = nnx.merge(graphdef, state)
      block_kernel = None if key_lengths is None else (impl, key_lengths)
      return block(x, positions, mask, inv_freq, self.sharding, block_kernel)

    policy = self.config.remat_policy
    if policy == "none":
      return run
    # Inside a scan the recomputation cannot be merged with the forward; unrolled, XLA's common
    # subexpression elimination would merge it and silently undo the remat unless prevented.
    return jax.checkpoint(run, policy=_REMAT_POLICIES[policy], prevent_cse=not self.config.scan_layers)


def with_unrolled_layers(model: Llama) -> Llama:
  """The same weights with the layers as a list (`scan_layers=False`), for a shape where the
  unrolled program is faster (decode on CPU reads each layer's weights in place instead of
  slicing them out of the stacked arrays). The weights are copied once (a slice per layer of
  each stacked array); the model is returned as it is when already unrolled."""
  if not model.config.scan_layers:
    return model
  config = model.config.replace(scan_layers=False)
  graphdef, abstract_vars = _unrolled_skeleton(config, model.sharding, hasattr(model, "lm_head"))
  stacked = {path: var[...] for path, var in nnx.to_flat_state(nnx.state(model))}
  layers = _split_layers({path[1:]: value for path, value in stacked.items() if path[0] == "layers"}, config.num_layers)
  values = []
  for path, var in abstract_vars:
    # ("layers", i, ...) in the list is row i of ("layers", ...) in the stack.
    value = layers[path[1]][path[2:]] if path[0] == "layers" else stacked[path]
    values.append((path, var.replace(value)))
  return nnx.merge(graphdef, nnx.from_flat_state(values))


def _split_layers(stacked: dict, num_layers: int) -> list[dict]:
  """{path: [L, ...]} -> L dicts {path: [...]}: row i of every stacked array. Indexed eagerly: one
  jitted program of the 270 slices of SmolLM2 took 2.1 s to compile against 0.7 s eagerly."""
  return [{path: value[i] for path, value in stacked.items()} for i in range(num_layers)]


@functools.lru_cache(maxsize=8)
def _unrolled_skeleton(config: LlamaConfig, sharding: Optional[ShardingContext], with_head: bool):
  """The graph and abstract variables [(path, Variable)] of an unrolled model: building them
  traces every layer's initialiser (seconds at 30 layers), so they are kept per configuration
  (each engine converts its model again, and a search or RLOO run makes many engines)."""
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding, with_lm_head=with_head))
  graphdef, abstract_state = nnx.split(abstract)
  return graphdef, tuple(nnx.to_flat_state(abstract_state))
