"""A static batch sampler: the benchmarks' reference for what the decode engine gains.

One jitted prefill of left-padded prompts, then a jitted `lax.while_loop` of single-token steps in
which every row runs until the longest has finished. Rows share one write index into a `KVCache`
(`valid` marks the positions that hold real tokens and `next_position` the RoPE position each row
continues from, so padding never shifts positions or receives attention), and attention reads the
whole cache at every step. Prompts are left-padded to a length bucket (and the batch to a batch
bucket), so a new prompt length reuses a compilation; the `n` samples of a prompt share one
prefill (its cache rows repeated). The library decodes on slots instead (sampling/engine.py); this
is kept here, built from the model's own blocks and layer iterator, only to measure against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.models.layers import grouped_query_attention, rope_inverse_frequencies
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.rules import sample_next
from helpsteer_jax.sampling.settings import SamplingSettings, bucket, left_pad


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  k: jax.Array  # [L, B, K, S, H]
  v: jax.Array  # [L, B, K, S, H]
  valid: jax.Array  # [B, S] bool: position holds a real token
  next_position: jax.Array  # [B] int32: RoPE position of the row's next token
  index: jax.Array  # [] int32: next position to write, shared by all rows

  @classmethod
  def init(cls, model: Llama, batch_size: int, max_length: int) -> "KVCache":
    config = model.config
    shape = (config.num_layers, batch_size, config.num_kv_heads, max_length, config.head_dim)
    zeros = jnp.zeros(shape, config.compute_dtype)
    return cls(
      k=zeros,
      v=zeros,
      valid=jnp.zeros((batch_size, max_length), bool),
      next_position=jnp.zeros((batch_size,), jnp.int32),
      index=jnp.zeros((), jnp.int32),
    )

  def repeat(self, n: int) -> "KVCache":
    """Each row repeated n times (rows b*n .. b*n+n-1 copy row b): n samples share one prefill."""
    rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
    return dataclasses.replace(
      self, k=rep(self.k, 1), v=rep(self.v, 1), valid=rep(self.valid, 0), next_position=rep(self.next_position, 0)
    )


def forward(model: Llama, ids: jax.Array, mask: jax.Array, cache: KVCache, empty: bool):
  """ids, mask [B, T] (left-padded) -> final-norm hidden states [B, T, D] and the cache with the
  chunk written at `cache.index`. `empty` (static): a fresh cache, which attention skips."""
  config = model.config
  b, t = ids.shape
  positions = cache.next_position[:, None] + jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  chunk_mask = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
  cache_mask = jnp.broadcast_to(cache.valid[:, None, :], (b, t, cache.k.shape[3]))
  inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
  x = jnp.take(model.embed[...], ids, axis=0).astype(config.compute_dtype)

  def run(graphdef, state, x, layer, cache_kv, thread_cache):
    def attend(q, k, v):  # q [B, T, N, H]; k, v [B, T, K, H]
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
      segments = [(k, v, chunk_mask)]
      if not empty:
        layer_k, layer_v = cache_kv[0][layer], cache_kv[1][layer]
        segments.insert(0, (layer_k.astype(q.dtype), layer_v.astype(q.dtype), cache_mask))
      return grouped_query_attention(q, segments, causal=True), ((k, v), cache_kv)

    return nnx.merge(graphdef, state).decode(x, positions, inv_freq, model.sharding, attend)

  x, (chunk_k, chunk_v), _ = model.over_layers(x, run, (cache.k, cache.v))
  at = (0, 0, 0, cache.index, 0)
  cache = dataclasses.replace(
    cache,
    k=jax.lax.dynamic_update_slice(cache.k, chunk_k.astype(cache.k.dtype), at),
    v=jax.lax.dynamic_update_slice(cache.v, chunk_v.astype(cache.v.dtype), at),
    valid=jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.index)),
    next_position=cache.next_position + mask.sum(axis=1).astype(jnp.int32),
    index=cache.index + t,
  )
  return model.final_norm(x), cache


@partial(jax.jit, static_argnames=("graphdef", "settings", "n", "cache_length"))
def _prefill_and_decode(graphdef, state, ids, mask, rng, *, settings: SamplingSettings, n: int, cache_length: int):
  """ids, mask [B, P] -> tokens [B*n, max_new_tokens], lengths [B*n] (tokens before a stop)."""
  model: Llama = nnx.merge(graphdef, state)
  batch = ids.shape[0]
  hidden, cache = forward(model, ids, mask, KVCache.init(model, batch, cache_length), empty=True)
  # Left padding puts every prompt's last token at the last position: only its logits are needed.
  last_logits = jnp.repeat(model.logits(hidden[:, -1:])[:, 0], n, axis=0)  # [B*n, V]
  cache = cache.repeat(n) if n > 1 else cache
  rows = batch * n
  stops = jnp.asarray(settings.stop_token_ids or (-1,), jnp.int32)

  def pick(logits, step_rng):
    return sample_next(logits, step_rng, settings.temperature, settings.top_k, settings.top_p)

  rng, first_rng = jax.random.split(rng)
  first = pick(last_logits, first_rng)
  tokens = jnp.full((rows, settings.max_new_tokens), settings.pad_id, jnp.int32).at[:, 0].set(first)
  active = jnp.repeat(mask.any(axis=1), n)  # filler rows of the batch bucket start finished
  done = jnp.isin(first, stops) | ~active
  lengths = jnp.where(done, 0, 1).astype(jnp.int32)

  def cond(carry):
    step, _, _, done, _, _ = carry
    return (step < settings.max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, tokens, cache, done, lengths, rng = carry
    previous = tokens[:, step - 1]
    hidden, cache = forward(model, previous[:, None], ~done[:, None], cache, empty=False)
    rng, step_rng = jax.random.split(rng)
    token = pick(model.logits(hidden)[:, 0], step_rng)
    token = jnp.where(done, settings.pad_id, token)
    tokens = tokens.at[:, step].set(token)
    stopped = jnp.isin(token, stops)
    lengths = lengths + jnp.where(done | stopped, 0, 1)
    return step + 1, tokens, cache, done | stopped, lengths, rng

  carry = (jnp.asarray(1, jnp.int32), tokens, cache, done, lengths, rng)
  _, tokens, _, _, lengths, _ = jax.lax.while_loop(cond, body, carry)
  return tokens, lengths


def sample_tokens_static(
  model: Llama, prompts: Sequence[Sequence[int]], settings: SamplingSettings, n: int = 1, seed: int = 0
) -> list[list[list[int]]]:
  """Token ids of n continuations per prompt (stop token excluded), as one static batch."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("expected at least one prompt, each of at least one token")
  longest = max(len(p) for p in prompts)
  prompt_length = bucket(longest)
  # Attention reads the whole cache at every step, so its length is rounded up finely (to 64).
  cache_length = -(-(prompt_length + settings.max_new_tokens) // 64) * 64
  if longest + settings.max_new_tokens > model.config.max_position_embeddings:
    raise ValueError(
      f"prompt of {longest} tokens + max_new_tokens={settings.max_new_tokens} exceeds "
      f"the model's context of {model.config.max_position_embeddings} positions"
    )
  batch = bucket(len(prompts), minimum=1)
  ids, mask = left_pad(prompts, prompt_length, batch, settings.pad_id)
  graphdef, state = nnx.split(model)
  tokens, lengths = _prefill_and_decode(
    graphdef,
    state,
    jnp.asarray(ids),
    jnp.asarray(mask),
    jax.random.key(seed),
    settings=settings,
    n=n,
    cache_length=cache_length,
  )
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return [[tokens[p * n + j, : lengths[p * n + j]].tolist() for j in range(n)] for p in range(len(prompts))]
