"""The references every decode path must equal: the greedy answer of a plain argmax loop over full
forward passes, and the keys and values of a full causal forward."""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

# Every full forward runs at this many positions: causal attention keeps the padding after the
# last real token out of its logits, and one compiled program serves every step.
REFERENCE_LENGTH = 64


@partial(jax.jit, static_argnames=("graphdef",))
def _argmax_at(graphdef, state, ids, last):
  """ids [1, REFERENCE_LENGTH] (right-padded) -> argmax of the logits at position `last`."""
  logits = nnx.merge(graphdef, state)(ids)
  return jnp.argmax(logits[0, last])


def greedy_reference(model, prompt, steps):
  if len(prompt) + steps > REFERENCE_LENGTH:
    raise ValueError(f"prompt + steps > {REFERENCE_LENGTH}")
  graphdef, state = nnx.split(model)
  ids = list(prompt)
  for _ in range(steps):
    padded = jnp.asarray([ids + [0] * (REFERENCE_LENGTH - len(ids))], jnp.int32)
    ids.append(int(_argmax_at(graphdef, state, padded, len(ids) - 1)))
  return ids[len(prompt) :]


def full_forward_keys_values(model, ids):
  """Every layer's keys and values [L, B, K, T, H] of a full causal forward over ids [B, T] (no
  cache): the reference for what a prefill writes into a cache."""
  from helpsteer_jax.models.layers import grouped_query_attention, rope_inverse_frequencies

  config = model.config
  t = ids.shape[1]
  positions = jnp.broadcast_to(jnp.arange(t)[None], ids.shape)
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool))[None], (ids.shape[0], t, t))
  inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)

  def run(graphdef, state, x, layer, cache_kv, thread_cache):
    def attend(q, k, v):
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
      return grouped_query_attention(q, [(k, v, mask)], causal=True), ((k, v), cache_kv)

    return nnx.merge(graphdef, state).decode(x, positions, inv_freq, model.sharding, attend)

  x = jnp.take(model.embed[...], ids, axis=0).astype(config.compute_dtype)
  _, (k, v), _ = model.over_layers(x, run)
  return k, v
