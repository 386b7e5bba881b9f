"""`sample_tokens` (on the decode engine, engine.py) and the static batch sampler.

Settings and prompt shaping (`SamplingSettings`, `bucket`, `keep_ends`, `left_pad`) live in
settings.py, below both this module and the engine; they are imported here for older callers.

`sample_tokens_static` is the earlier static batch, kept as the benchmarks' reference: one jitted
prefill, then a jitted `lax.while_loop` of single-token decode steps in which every row runs until
the longest has finished. Static settings (`SamplingSettings`, hashable) select the compiled program; dynamic state (tokens,
cache, rng) flows through it as a pytree. Prompts are left-padded to a length bucket (and the batch
to a batch bucket), so a new prompt length reuses an existing compilation. The `n` samples of a
prompt share one prefill: its cache rows are repeated, not recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.models.kv_cache import CACHE_AXES, KVCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import constrain
from helpsteer_jax.sampling.rules import sample_next
from helpsteer_jax.sampling.settings import SamplingSettings, bucket, keep_ends, left_pad  # noqa: F401


@partial(jax.jit, static_argnames=("graphdef", "settings", "n", "cache_length"))
def _prefill_and_decode(graphdef, state, ids, mask, rng, *, settings: SamplingSettings, n: int,
                        cache_length: int):
  """ids, mask [B, P] -> tokens [B*n, max_new_tokens], lengths [B*n] (tokens before a stop)."""
  model: Llama = nnx.merge(graphdef, state)
  batch = ids.shape[0]
  cache = KVCache.init(model.config, batch, cache_length)
  cache = _constrain_cache(cache, model)
  hidden, cache = model.hidden_states(ids, input_mask=mask, cache=cache, cache_is_empty=True)
  # Left padding puts every prompt's last token at the last position: only its logits are needed.
  last_logits = jnp.repeat(model.logits(hidden[:, -1:])[:, 0], n, axis=0)  # [B*n, V]
  cache = _constrain_cache(cache.repeat(n), model) if n > 1 else cache
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
    logits, cache = model(previous[:, None], input_mask=~done[:, None], cache=cache)
    rng, step_rng = jax.random.split(rng)
    token = pick(logits[:, 0], step_rng)
    token = jnp.where(done, settings.pad_id, token)
    tokens = tokens.at[:, step].set(token)
    stopped = jnp.isin(token, stops)
    lengths = lengths + jnp.where(done | stopped, 0, 1)
    return step + 1, tokens, cache, done | stopped, lengths, rng

  carry = (jnp.asarray(1, jnp.int32), tokens, cache, done, lengths, rng)
  _, tokens, _, _, lengths, _ = jax.lax.while_loop(cond, body, carry)
  return tokens, lengths


def _constrain_cache(cache: KVCache, model: Llama) -> KVCache:
  if model.sharding is None:
    return cache
  return cache.replace(k=constrain(cache.k, CACHE_AXES, model.sharding),
                       v=constrain(cache.v, CACHE_AXES, model.sharding))


def sample_tokens(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    n: int = 1,
    seed: int = 0,
    names: Optional[Sequence[object]] = None,
    num_slots: int = 32,
) -> list[list[list[int]]]:
  """Token ids of n continuations per prompt (stop token excluded): [len(prompts)][n][tokens],
  decoded by an engine of at most `num_slots` slots. Prompt i's samples draw from the key of
  (seed, names[i]) (default: its index), whatever else is in the call."""
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key

  if not prompts:
    return []
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
  if names is not None and len(names) != len(prompts):
    raise ValueError(f"{len(names)} names for {len(prompts)} prompts; expected one each")
  names = list(range(len(prompts))) if names is None else list(names)
  slots = min(num_slots, bucket(len(prompts) * n, minimum=1))
  engine = Engine(model, EngineSettings(num_slots=slots, stop_token_ids=settings.stop_token_ids,
                                        pad_id=settings.pad_id))
  requests = [Request(list(p), settings, sample_key(seed, name), n=n) for p, name in zip(prompts, names)]
  for request in requests:
    engine.submit(request)
  engine.run()
  return [r.results for r in requests]


def sample_tokens_static(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    n: int = 1,
    seed: int = 0,
) -> list[list[list[int]]]:
  """As `sample_tokens`, as one static left-padded batch (the benchmarks' reference)."""
  if not prompts:
    return []
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
  longest = max(len(p) for p in prompts)
  prompt_length = bucket(longest)
  # Attention reads the whole cache at every step, so its length is rounded up finely (to 64).
  cache_length = -(-(prompt_length + settings.max_new_tokens) // 64) * 64
  limit = model.config.max_position_embeddings
  if longest + settings.max_new_tokens > limit:
    raise ValueError(
        f"prompt of {longest} tokens + max_new_tokens={settings.max_new_tokens} exceeds the "
        f"model's context of {limit} positions"
    )
  batch = bucket(len(prompts), minimum=1)
  ids, mask = left_pad(prompts, prompt_length, batch, settings.pad_id)
  graphdef, state = nnx.split(model)
  tokens, lengths = _prefill_and_decode(
      graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed),
      settings=settings, n=n, cache_length=cache_length,
  )
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return [
      [tokens[p * n + j, : lengths[p * n + j]].tolist() for j in range(n)] for p in range(len(prompts))
  ]
