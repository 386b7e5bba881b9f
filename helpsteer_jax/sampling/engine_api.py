"""The decode engine's device side: a typed decode state and the pure programs over it.

`DecodeState` holds the slots' cache and each slot's sample in progress. The programs are pure
functions of (weights, state): `prefill` a prompt into a slot's cache, `insert` a sample into that
slot (drawing its first token), `decode_steps` every live slot, `grow` the state, `take_slots` (keep
some slots, in a new order, evicting the rest). `ModelEngine` binds them to one model and its
settings; `DeviceEngine` is what the scheduler (sampling/engine.py) calls, so that a mock engine
(sampling/mock_engine.py) can stand in for a model in its tests.

A slot's tokens depend only on its prompt, settings and key: rows are computed independently of
each other and each draws from its own key (sampling/keys.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any, Callable, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.models.decode.decode_layout import decode_layouts
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.host_values import to_host
from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill, PrefixShare, on_weights_device
from helpsteer_jax.sampling.engine_settings import EngineSettings
from helpsteer_jax.sampling.prefix_entries import PrefixEntries
from helpsteer_jax.sampling.rules import sample_rows
from helpsteer_jax.sampling.settings import SamplingSettings, bucket


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
  """The cache and each slot's sample in progress ([B] per slot)."""

  cache: SlotCache
  last: jax.Array  # [B] int32: the slot's latest token, the next step's input
  out: jax.Array  # [B, W] int32: tokens generated so far
  count: jax.Array  # [B] int32: tokens generated (the stop token excluded)
  done: jax.Array  # [B] bool: stopped or at its max_new_tokens
  live: jax.Array  # [B] bool: holds a sample
  key: jax.Array  # [B, 2] uint32: the sample's key data
  temperature: jax.Array  # [B] fp32
  top_k: jax.Array  # [B] int32, 0 = none
  top_p: jax.Array  # [B] fp32, 1 = none
  max_new: jax.Array  # [B] int32

  @property
  def num_slots(self) -> int:
    return self.last.shape[0]

  def take(self, rows: jax.Array, valid: jax.Array) -> "DecodeState":
    """The state of slots `rows` [R] (a new slot j holds old slot rows[j]); slots where `valid`
    [R] is False hold nothing."""
    take = lambda x: jnp.take(x, rows, axis=0)
    prefix = self.cache.prefix
    if prefix is not None:  # the table stays; which entry each slot reads moves with the slot
      prefix = dataclasses.replace(prefix, of_slot=jnp.where(valid, take(prefix.of_slot), -1))
    cache = self.cache.replace(
      k=jnp.take(self.cache.k, rows, axis=1),
      v=jnp.take(self.cache.v, rows, axis=1),
      lengths=take(self.cache.lengths),
      prefix=prefix,
    )
    fields = {f.name: take(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "cache"}
    fields["live"] = fields["live"] & valid
    return DecodeState(cache=cache, **fields)

  @classmethod
  def init(cls, model: Llama, num_slots: int, cache_length: int, width: int, prefix_entries: int = 0) -> "DecodeState":
    """An empty state; with `prefix_entries`, its cache has a prefix table of that many entries
    (of `cache_length` positions each, to start with)."""
    b = num_slots
    cache = SlotCache.init(
      model.config,
      b,
      cache_length,
      keys_transposed=model.slot_keys_transposed(),
      prefix_entries=prefix_entries,
      prefix_length=cache_length,
    )
    return cls(
      cache=cache,
      last=jnp.zeros((b,), jnp.int32),
      out=jnp.zeros((b, width), jnp.int32),
      count=jnp.zeros((b,), jnp.int32),
      done=jnp.zeros((b,), bool),
      live=jnp.zeros((b,), bool),
      key=jnp.zeros((b, 2), jnp.uint32),
      temperature=jnp.zeros((b,), jnp.float32),
      top_k=jnp.zeros((b,), jnp.int32),
      top_p=jnp.ones((b,), jnp.float32),
      max_new=jnp.ones((b,), jnp.int32),
    )


# -- the pure programs ----------------------------------------------------------------------------


def _token_keys(key_data: jax.Array, count: jax.Array) -> jax.Array:
  """[B, 2] sample key data, [B] token index -> [B] typed keys of each slot's next token."""
  keys = jax.random.wrap_key_data(key_data)
  return jax.vmap(jax.random.fold_in)(keys, count)


def _stops(settings: EngineSettings) -> jax.Array:
  return jnp.asarray(settings.stop_token_ids or (-1,), jnp.int32)


def prefill(
  chunks: ChunkedPrefill,
  state: DecodeState,
  slot: int,
  prompt: Sequence[int],
  breaks: Sequence[int] = (),
  logits: bool = True,
  share: Optional[PrefixShare] = None,
) -> tuple[DecodeState, jax.Array | None, int]:
  """`prompt` into slot `slot`'s cache, chunk by chunk (kept chunks copied, the rest computed;
  with `share`, its shared prefix in the prefix table). -> the state, the logits [1, V] after the
  prompt (None unless `logits`: a request's later samples reuse its first's), and the prompt
  tokens computed."""
  cache, hidden, computed = chunks.fill(state.cache, slot, prompt, breaks, share)
  return dataclasses.replace(state, cache=cache), chunks.logits(hidden) if logits else None, computed


@partial(jax.jit, static_argnames=("settings",), donate_argnums=(0,))
def insert(
  state: DecodeState, logits, slot, key, sample, temperature, top_k, top_p, max_new, *, settings: EngineSettings
) -> DecodeState:
  """Puts sample `sample` of a prefilled request (its prompt already in the cache) into `slot` and
  draws its first token from `logits` [1, V] with key fold_in(fold_in(key, sample), 0)."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key), sample)
  key_data = jax.random.key_data(key)
  first = sample_rows(
    logits,
    jax.random.fold_in(key, 0)[None],
    temperature[None],
    top_k[None],
    top_p[None],
    settings.top_p_candidates,
    settings.top_p_fast_candidates,
  )[0]
  stopped = jnp.isin(first, _stops(settings))
  return dataclasses.replace(
    state,
    last=state.last.at[slot].set(first),
    out=state.out.at[slot].set(settings.pad_id).at[slot, 0].set(first),
    count=state.count.at[slot].set(jnp.where(stopped, 0, 1)),
    done=state.done.at[slot].set(stopped | (max_new <= 1)),
    live=state.live.at[slot].set(True),
    key=state.key.at[slot].set(key_data),
    temperature=state.temperature.at[slot].set(temperature),
    top_k=state.top_k.at[slot].set(top_k),
    top_p=state.top_p.at[slot].set(top_p),
    max_new=state.max_new.at[slot].set(max_new),
  )


@partial(jax.jit, static_argnames=("graphdef", "settings"), donate_argnums=(2,))
def decode_steps(graphdef, params, state: DecodeState, exit_on_free, *, settings: EngineSettings):
  """Up to `steps_per_call` steps of every active slot; with `exit_on_free`, returns as soon as a
  slot finishes (a queued request can take it). -> state, steps run, tokens generated."""
  model: Llama = nnx.merge(graphdef, params)
  stops = _stops(settings)
  width = state.out.shape[1]
  rows = jnp.arange(state.last.shape[0])
  finished_at_entry = jnp.sum(state.live & state.done)

  def cond(carry):
    state, step, _ = carry
    active = state.live & ~state.done
    freed = jnp.sum(state.live & state.done) > finished_at_entry
    return (step < settings.steps_per_call) & jnp.any(active) & ~(exit_on_free & freed)

  def body(carry):
    state, step, generated = carry
    active = state.live & ~state.done
    logits, cache = model.decode_slots(state.last, state.cache, active, settings.attention_block)
    token = sample_rows(
      logits,
      _token_keys(state.key, state.count),
      state.temperature,
      state.top_k,
      state.top_p,
      settings.top_p_candidates,
      settings.top_p_fast_candidates,
    )
    stopped = jnp.isin(token, stops)
    keep = active & ~stopped
    at = jnp.where(keep, state.count, width)  # dropped for rows that do not write
    out = state.out.at[rows, at].set(token, mode="drop")
    count = state.count + keep.astype(jnp.int32)
    done = state.done | (active & (stopped | (count >= state.max_new)))
    state = dataclasses.replace(
      state, cache=cache, last=jnp.where(active, token, state.last), out=out, count=count, done=done
    )
    return state, step + 1, generated + jnp.sum(keep)

  carry = (state, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
  return jax.lax.while_loop(cond, body, carry)


@jax.jit
def stop_slots(state: DecodeState, stop: jax.Array) -> DecodeState:
  """`state` with the slots where `stop` [B] is True marked done: the next decode step skips them."""
  return dataclasses.replace(state, done=state.done | stop)


@jax.jit
def take_slots(state: DecodeState, rows: jax.Array, valid: jax.Array) -> DecodeState:
  """Slots `rows` of `state` in that order (a program of len(rows) slots); the others are evicted."""
  return state.take(rows, valid)


@partial(jax.jit, static_argnames=("length",))
def grow_table(state: DecodeState, *, length: int) -> DecodeState:
  """The same state with `length` positions per prefix table entry."""
  cache = state.cache
  assert cache.prefix is not None
  return dataclasses.replace(state, cache=cache.replace(prefix=cache.prefix.grow(length, cache.keys_transposed)))


@partial(jax.jit, static_argnames=("cache_length", "width"))
def grow(state: DecodeState, *, cache_length: int, width: int) -> DecodeState:
  """The same state in a longer cache and/or a wider token buffer."""
  cache = state.cache.grow(cache_length)
  out = jnp.pad(state.out, ((0, 0), (0, width - state.out.shape[1])))
  return dataclasses.replace(state, cache=cache, out=out)


# -- what the scheduler calls ---------------------------------------------------------------------

# A program to compile ahead: (name, jitted function, arguments, keyword arguments).
AheadProgram = tuple[tuple, Callable, tuple, dict]


class DeviceEngine(Protocol):
  """The device side as the scheduler sees it. States are opaque to it but for `num_slots`."""

  context: int  # positions a prompt and its samples may span

  def row_positions(self, slot: int, prompt: Sequence[int], breaks: Sequence[int], max_new_tokens: int) -> int:
    """Positions of `slot`'s cache row that `prompt` and its samples would take."""
    ...

  def init_state(self, num_slots: int, cache_length: int, width: int) -> Any: ...
  def capacity(self, state) -> tuple[int, int]: ...  # cache positions, token buffer width
  def prefill(
    self, state, slot: int, prompt: Sequence[int], breaks: Sequence[int], logits: bool
  ) -> tuple[Any, Any, int]: ...
  def insert(self, state, logits, slot: int, key: np.ndarray, sample: int, settings: SamplingSettings) -> Any: ...
  def decode_steps(self, state) -> tuple[Any, int, int]: ...
  def progress(self, state) -> tuple[np.ndarray, np.ndarray]: ...  # done [B], count [B] on host
  def tokens(self, state) -> np.ndarray: ...  # [B, W] on host
  def grow(self, state, cache_length: int, width: int) -> Any: ...
  def take_slots(self, state, rows: np.ndarray, valid: np.ndarray) -> Any: ...
  def stop_slots(self, state, stop: np.ndarray) -> Any: ...  # marks slots done
  def programs_ahead(self, state, tail_slots: int) -> list[AheadProgram]: ...


class ModelEngine:
  """The programs above bound to one model (in the decode layout `settings.layout` resolves to)."""

  def __init__(self, model: Llama, settings: EngineSettings):
    self.model = model
    self.settings = settings
    self.layout = resolve_layout(model, settings)
    decode_model = decode_layouts.get(model, self.layout)
    self.scanned = decode_model.config.scan_layers
    self.graphdef, self.params = nnx.split(decode_model)
    # Chunks are kept and reused by any prompt that starts with the same tokens (a request's n
    # samples, the search's requests about one draft). The prefill keeps the model's own layout
    # when decoding unrolled or fused (those compile slowly at each chunk width); switched layers
    # compile like scanned ones, so a switched engine prefills on them too.
    self.chunks = ChunkedPrefill(
      model,
      settings.prefill_chunk,
      settings.keep_prefill_mb << 20,
      layout=decode_model if self.layout == "switched" else None,
    )
    self.context = model.config.max_position_embeddings
    self.entries = None
    if settings.prefix_entries:
      if self.model.sharding is not None and self.model.sharding.mesh.size > 1:
        raise ValueError(
          f"prefix_entries={settings.prefix_entries}: a prefix table is for an unsharded cache; "
          f"the model is sharded over {self.model.sharding.mesh.size} devices (set prefix_entries=0)"
        )
      self.entries = PrefixEntries(settings.prefix_entries, settings.num_slots, settings.attention_block)

  def row_positions(self, slot: int, prompt: Sequence[int], breaks: Sequence[int], max_new_tokens: int) -> int:
    share = None if self.entries is None else self.entries.plan(slot, prompt, breaks, self.chunks)
    base = 0 if share is None else share.base
    return max(self.chunks.row_positions(len(prompt), breaks, base), len(prompt) + max_new_tokens - base)

  def init_state(self, num_slots: int, cache_length: int, width: int) -> DecodeState:
    state = DecodeState.init(self.model, num_slots, cache_length, width, self.settings.prefix_entries)
    return on_weights_device(state, self.model)

  def capacity(self, state: DecodeState) -> tuple[int, int]:
    return state.cache.max_length, state.out.shape[1]

  def prefill(self, state, slot, prompt, breaks, logits):
    if self.entries is None:
      return prefill(self.chunks, state, slot, prompt, breaks, logits)
    share = self.entries.plan(slot, prompt, breaks, self.chunks)
    if share is not None:
      need = self.chunks.table_positions(len(prompt), breaks, share.base)
      table = state.cache.prefix
      if need > table.max_length:  # sizes double, as the rows' do
        state = grow_table(state, length=bucket(need, minimum=table.max_length))
    state, logits, computed = prefill(self.chunks, state, slot, prompt, breaks, logits, share)
    self.entries.assign(slot, prompt, breaks, self.chunks, share)
    return state, logits, computed

  def insert(self, state, logits, slot, key, sample, settings: SamplingSettings) -> DecodeState:
    return insert(
      state,
      logits,
      jnp.asarray(slot, jnp.int32),
      jnp.asarray(key, jnp.uint32),
      jnp.asarray(sample, jnp.int32),
      jnp.asarray(settings.temperature, jnp.float32),
      jnp.asarray(settings.top_k or 0, jnp.int32),
      jnp.asarray(1.0 if settings.top_p is None else settings.top_p, jnp.float32),
      jnp.asarray(settings.max_new_tokens, jnp.int32),
      settings=self.settings,
    )

  def decode_steps(self, state):
    # Every freed slot returns to the host: a finished sample may complete a request whose
    # callback has the next stage's work.
    state, steps, generated = decode_steps(self.graphdef, self.params, state, jnp.asarray(True), settings=self.settings)
    return state, int(steps), int(generated)

  def progress(self, state):
    return to_host(state.done), to_host(state.count)

  def tokens(self, state):
    return to_host(state.out)

  def grow(self, state, cache_length, width):
    return grow(state, cache_length=cache_length, width=width)

  def take_slots(self, state, rows, valid):
    if self.entries is not None:
      self.entries.take(np.asarray(rows), np.asarray(valid))
    return take_slots(state, jnp.asarray(rows, jnp.int32), jnp.asarray(valid))

  def stop_slots(self, state, stop):
    return stop_slots(state, jnp.asarray(stop))

  def programs_ahead(self, state: DecodeState, tail_slots: int) -> list[AheadProgram]:
    """The programs the state's shapes will run, compiled for exactly the arguments they will get:
    the decode step at full size, then the move to the tail's size, its decode step and the move
    back. None on several devices (not measured there)."""
    if not (self.model.sharding is None or self.model.sharding.mesh.size == 1):
      return []
    like = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
    full = jax.tree.map(like, state)
    flag = jax.ShapeDtypeStruct((), jnp.bool_)  # jnp.asarray(True): uncommitted
    rows = lambda n: (jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.bool_))
    num_slots = state.num_slots
    programs: list[AheadProgram] = [
      (("decode", num_slots), decode_steps, (self.graphdef, self.params, full, flag), {"settings": self.settings})
    ]
    if 0 < tail_slots < num_slots:
      sharding = state.last.sharding
      shaped = jax.eval_shape(
        lambda s: s.take(jnp.zeros((tail_slots,), jnp.int32), jnp.ones((tail_slots,), bool)), state
      )
      small = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shaped)
      programs += [
        (("take", tail_slots), take_slots, (full, *rows(tail_slots)), {}),
        (("decode", tail_slots), decode_steps, (self.graphdef, self.params, small, flag), {"settings": self.settings}),
        (("take", num_slots), take_slots, (small, *rows(num_slots)), {}),
      ]
    return programs


def resolve_layout(model: Llama, settings: EngineSettings) -> str:
  """`settings.layout`, with auto resolved for the model's backend and the number of slots."""
  if settings.layout != "auto":
    return settings.layout
  platform = next(iter(model.embed[...].devices())).platform
  single_device = model.sharding is None or model.sharding.mesh.size == 1
  if not single_device or platform not in ("cpu", "gpu"):
    return "model"
  if platform == "gpu":
    return "unrolled"
  return "fused" if settings.num_slots == 1 else "switched"
