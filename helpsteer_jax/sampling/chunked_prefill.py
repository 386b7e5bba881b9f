"""Prompts prefilled chunk by chunk into a slot of a cache, with chunks kept and reused by prefix.

A prompt of P tokens is prefilled as ceil(P / C) chunks of C tokens (the last right-padded), by
the same few compiled programs (`Llama.prefill_chunk`) whatever the prompt's length: a prefill
that ran at each padded prompt length compiled 1-1.5 s per new length on a 2-core CPU, about 20
programs in an 8-prompt search.

A chunk depends only on the prompt's tokens up to its end (and on where the chunks before it
start), so it is kept (`PrefixChunks`, least recently used first out, bounded in bytes) under
those, and a later prompt that starts with the same tokens, chunked the same way, copies it into
its slot instead of computing it. In the search the Feedback, Edit and judge requests about one
draft all begin with the conversation and that draft (formats/plain.py), and the n samples of a
request, or two requests with one prompt (the drafts and the greedy reference), share every chunk.
A kept chunk is what recomputing it would give, bit for bit: the same program on the same inputs,
so reuse changes no token.

Related prompts stop sharing tokens mid-chunk: the chunk that holds the end of a shared draft also
holds the start of each request's own instruction, and would be computed again for every one of
them. A prompt may therefore name `breaks`, positions where a chunk must end (where its shared part
ends, found by the caller from the prompt's own content so that a request's chunks never depend on
what ran before it); chunks of C start again after each break (`segments`). In an 8-prompt search
this left a third of the prompt tokens that were computed to be copied instead.

A prompt's last chunk, and a chunk that ends at a break, runs in a narrower program when it is
shorter than C (the multiple of C / 4 that holds it): three more programs, compiled once each, so
that short pieces are not padded to a whole chunk.

Shapes: chunk keys and values [L, 1, K, T, H] (T = C but for a narrower chunk); the hidden state of
a chunk's last token [1, D].
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.host_values import to_host


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Chunk:
  k: jax.Array  # [L, 1, K, T, H]
  v: jax.Array  # [L, 1, K, T, H]
  hidden: jax.Array  # [1, D]: final-norm hidden state of the chunk's last real token

  @property
  def nbytes(self) -> int:
    return self.k.nbytes + self.v.nbytes + self.hidden.nbytes


ChunkKey = tuple[tuple[int, ...], tuple[int, ...]]  # (the prompt's tokens up to the chunk's end, chunk starts)


class PrefixChunks:
  """Chunks by what they depend on (the prompt's tokens up to the chunk's end, and the starts of
  the prompt's chunks up to this one), evicted least recently used first once they hold more than
  `max_bytes`."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self._chunks: collections.OrderedDict[ChunkKey, Chunk] = collections.OrderedDict()
    self._bytes = 0

  def __len__(self) -> int:
    return len(self._chunks)

  def get(self, tokens: ChunkKey) -> Chunk | None:
    chunk = self._chunks.get(tokens)
    if chunk is not None:
      self._chunks.move_to_end(tokens)
    return chunk

  def put(self, tokens: ChunkKey, chunk: Chunk) -> None:
    if tokens in self._chunks:
      return
    self._chunks[tokens] = chunk
    self._bytes += chunk.nbytes
    while self._bytes > self.max_bytes and self._chunks:
      _, old = self._chunks.popitem(last=False)
      self._bytes -= old.nbytes


def on_weights_device(tree, model: Llama):
  """`tree` committed to the device of an unsharded model's weights (a sharded model's as is).

  A program's outputs are committed wherever its inputs are, and JAX keys its compiled programs
  on whether each argument is committed: a state created uncommitted (jnp.zeros) and then fed
  back from a program compiled each program twice, once for the first call and once for every
  call after it (1-2 s each on a 2-core CPU for the chunk and insert programs)."""
  if model.sharding is not None and model.sharding.mesh.size > 1:
    return tree
  return jax.device_put(tree, next(iter(model.embed[...].devices())))


@partial(jax.jit, static_argnames=("graphdef", "block"), donate_argnums=(2,))
def _compute_chunk(graphdef, state, cache: SlotCache, ids, slot, start, last, *, block: int):
  """Computes one chunk (ids [1, T], T <= block) of `slot`'s prompt and writes it at `start`."""
  model: Llama = nnx.merge(graphdef, state)
  hidden, k, v = model.prefill_chunk(ids, cache, slot, start, last, block)
  return cache.write(k, v, slot, start), Chunk(k, v, hidden)


_copy_chunk = jax.jit(SlotCache.write, donate_argnums=(0,))


@partial(jax.jit, donate_argnums=(0,))
def _copy_chunk_tail(cache: SlotCache, k, v, slot, skip) -> SlotCache:
  """A chunk's positions from `skip` on written into `slot`'s row from its position 0 (the chunk
  that holds the end of a slot's shared prefix: the positions before it are in the prefix table).
  The chunk is rotated, so its first `skip` positions land past its end, where later chunks and
  decoding overwrite them."""
  rotate = lambda x: jnp.roll(x, -skip, axis=3)
  return cache.write(rotate(k), rotate(v), slot, jnp.asarray(0, jnp.int32))


@partial(jax.jit, donate_argnums=(0,))
def _copy_chunk_to_table(cache: SlotCache, k, v, entry, start) -> SlotCache:
  assert cache.prefix is not None
  return cache.replace(prefix=cache.prefix.write(k, v, entry, start, cache.keys_transposed))


@jax.jit
def _assign(cache: SlotCache, slot, length, entry, base) -> SlotCache:
  """`slot` holds `length` positions, its first `base` read from entry `entry` (-1: none)."""
  prefix = None if cache.prefix is None else cache.prefix.assign(slot, entry, base)
  return cache.replace(lengths=cache.lengths.at[slot].set(length), prefix=prefix)


@dataclasses.dataclass(frozen=True)
class PrefixShare:
  """A prompt's first `base` positions held by entry `entry` of the cache's prefix table
  (models/decode/prefix_table.py), written there by this prefill when `fresh`, else already there."""

  entry: int
  base: int
  fresh: bool


@partial(jax.jit, static_argnames=("graphdef",))
def _head(graphdef, state, hidden):
  """hidden [1, D] -> fp32 logits [1, V]."""
  model: Llama = nnx.merge(graphdef, state)
  return model.logits(hidden[:, None])[:, 0]


@dataclasses.dataclass
class PrefillCounts:
  computed_tokens: int = 0  # prompt tokens whose chunk was computed
  reused_tokens: int = 0  # prompt tokens whose chunk was copied from a kept one
  computed_chunks: int = 0
  reused_chunks: int = 0


class ChunkedPrefill:
  """Prefills prompts of one model into slots of `SlotCache`s, `chunk` tokens at a time, keeping
  up to `keep_bytes` of chunks for reuse (0 keeps none). One object may serve an engine's slots
  and a scorer that needs only a prompt's next-token logits: they then share the kept chunks."""

  def __init__(self, model: Llama, chunk: int = 128, keep_bytes: int = 1 << 30, layout: Optional[Llama] = None):
    """`layout`: the same model in another layout to compute the chunks with (models/
    decode_layout.py; its products must give `model`'s results bit for bit, as switched layers do,
    so that kept chunks are what any user of `model` would compute)."""
    if chunk < 1:
      raise ValueError(f"prefill chunk={chunk}; expected at least 1")
    self.model = model
    self.chunk = chunk
    self._graphdef, self._state = nnx.split(layout if layout is not None else model)
    self.kept = PrefixChunks(keep_bytes)
    self.counts = PrefillCounts()
    self._scratch: SlotCache | None = None  # the row every chunk is computed in

  def width(self, tokens: int) -> int:
    """The width of the chunk program that computes `tokens` <= chunk tokens: the chunk, or for a
    shorter chunk (a prompt's last, or one that ends at a break) the next multiple of a quarter
    chunk (32 of 128; at least 16), so that a short piece is padded by less than a quarter chunk.
    Compute grows with the width (a 64-wide chunk of SmolLM2 took half the time of a 128-wide one
    on a 2-core CPU). In an 8-prompt search most pieces were 34-, 42-, 66- and 76-token tails:
    powers of two (16, 32, 64) computed 15568 positions for 12348 prompt tokens, quarters 14336,
    with as many programs."""
    step = max(1, self.chunk // 4)
    return min(self.chunk, max(16, -(-max(tokens, 1) // step) * step))

  def segments(self, length: int, breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """The chunks [start, end) of a prompt of `length` tokens: `chunk` tokens at a time, and a
    chunk also ends at each of `breaks` inside the prompt, after which chunks start again."""
    stops = sorted({int(b) for b in breaks if 0 < b < length} | {length})
    pieces, at = [], 0
    for stop in stops:
      while at < stop:
        end = min(at + self.chunk, stop)
        pieces.append((at, end))
        at = end
    return pieces

  def padded_length(self, length: int, breaks: Sequence[int] = ()) -> int:
    """Cache positions a prompt of `length` tokens writes: up to the end of its last chunk's
    program (padding past the prompt lies where decoding writes later)."""
    return max(start + self.width(end - start) for start, end in self.segments(length, breaks))

  def row_positions(self, length: int, breaks: Sequence[int] = (), base: int = 0) -> int:
    """Positions of a slot's row that a prompt of `length` tokens writes when its first `base` are
    in a prefix table: from the first chunk that ends past `base`."""
    return max(
      (max(start - base, 0) + self.width(end - start) for start, end in self.segments(length, breaks) if end > base),
      default=0,
    )

  def table_positions(self, length: int, breaks: Sequence[int], base: int) -> int:
    """Positions of a prefix table entry that the chunks holding a prompt's first `base` write."""
    return max(
      (start + self.width(end - start) for start, end in self.segments(length, breaks) if start < base), default=0
    )

  def fill(
    self,
    cache: SlotCache,
    slot: int,
    prompt: Sequence[int],
    breaks: Sequence[int] = (),
    share: Optional[PrefixShare] = None,
  ) -> tuple[SlotCache, jax.Array, int]:
    """Writes `prompt` into positions [0, padded_length) of `slot` (the cache is donated) and sets
    the slot's length to len(prompt); with `share`, its first `share.base` positions go to the
    prefix table's entry instead (when fresh) and the rest to the slot's row from its position 0.
    -> the cache, the hidden state of the prompt's last token [1, D], and how many of its tokens
    were computed (the rest were copied from kept chunks)."""
    base = 0 if share is None else share.base
    need = self.row_positions(len(prompt), breaks, base)
    if need > cache.max_length:
      raise ValueError(
        f"a prompt of {len(prompt)} tokens needs {need} cache positions (chunks of {self.chunk}); "
        f"the cache has {cache.max_length}"
      )
    if share is not None and (
      cache.prefix is None or self.table_positions(len(prompt), breaks, base) > cache.prefix.max_length
    ):
      raise ValueError(f"a shared prefix of {base} positions does not fit the cache's prefix table")
    chunks, computed = self._prefill(prompt, breaks)
    at = jnp.asarray(slot, jnp.int32)
    position = lambda i: jnp.asarray(i, jnp.int32)
    # In order: a narrower chunk's padding is overwritten by the chunk after it.
    for (start, end), chunk in zip(self.segments(len(prompt), breaks), chunks):
      if share is not None and share.fresh and start < base:
        cache = _copy_chunk_to_table(cache, chunk.k, chunk.v, position(share.entry), position(start))
      if end <= base:
        continue
      if start >= base:
        cache = _copy_chunk(cache, chunk.k, chunk.v, at, position(start - base))
      else:
        cache = _copy_chunk_tail(cache, chunk.k, chunk.v, at, position(base - start))
    entry = -1 if share is None else share.entry
    cache = _assign(cache, at, position(len(prompt)), position(entry), position(base))
    return cache, chunks[-1].hidden, computed

  def next_token_logits(self, prompt: Sequence[int], breaks: Sequence[int] = ()) -> np.ndarray:
    """fp32 logits [V] of the token after `prompt` (a scorer's one forward pass), through the same
    chunks as every other prompt."""
    return to_host(self.logits(self.last_hidden(prompt, breaks)))[0]

  def last_hidden(self, prompt: Sequence[int], breaks: Sequence[int] = ()) -> jax.Array:
    """The final-norm hidden state of `prompt`'s last token [1, D] (a scalar head's input),
    through the same chunks as every other prompt."""
    context = self.model.config.max_position_embeddings
    if len(prompt) > context:
      raise ValueError(f"a prompt to score has {len(prompt)} tokens; the model's context is {context}")
    chunks, _ = self._prefill(prompt, breaks)
    return chunks[-1].hidden

  def _prefill(self, prompt: Sequence[int], breaks: Sequence[int] = ()) -> tuple[list[Chunk], int]:
    """The chunks of `prompt`, kept ones reused and the rest computed in this object's own cache
    row, so that every chunk of every prompt runs in one compiled program whatever cache it is
    then copied into. -> the chunks and the number of prompt tokens computed."""
    length = len(prompt)
    if length == 0:
      raise ValueError("a prompt to prefill is empty")
    pieces = self.segments(length, breaks)
    need = self.padded_length(length, breaks)
    if self._scratch is None or self._scratch.max_length < need:
      size = 1024  # sizes double, so a longer prompt seldom compiles the chunk program again
      while size < need:
        size *= 2
      scratch = SlotCache.init(self.model.config, 1, size, keys_transposed=self.model.slot_keys_transposed())
      self._scratch = on_weights_device(scratch, self.model)
    tokens = tuple(int(t) for t in prompt)
    starts = tuple(start for start, _ in pieces)
    row = jnp.asarray(0, jnp.int32)
    chunks: list[Chunk] = []
    held = 0  # leading chunks of this prompt that the scratch row holds
    computed = 0
    for j, (start, end) in enumerate(pieces):
      key = (tokens[:end], starts[: j + 1])
      chunk = self.kept.get(key)
      if chunk is not None:
        chunks.append(chunk)
        self.counts.reused_tokens += end - start
        self.counts.reused_chunks += 1
        continue
      for i in range(held, j):  # the chunks this one attends to, if they came from the kept ones
        self._scratch = _copy_chunk(self._scratch, chunks[i].k, chunks[i].v, row, jnp.asarray(starts[i], jnp.int32))
      ids = np.zeros((1, self.width(end - start)), np.int32)
      ids[0, : end - start] = tokens[start:end]
      self._scratch, chunk = _compute_chunk(
        self._graphdef,
        self._state,
        self._scratch,
        jnp.asarray(ids),
        row,
        jnp.asarray(start, jnp.int32),
        jnp.asarray(end - start - 1, jnp.int32),
        block=self.chunk,
      )
      held = j + 1
      self.kept.put(key, chunk)
      chunks.append(chunk)
      computed += end - start
      self.counts.computed_chunks += 1
    self.counts.computed_tokens += computed
    return chunks, computed

  def logits(self, hidden: jax.Array) -> jax.Array:
    """The output head on a prompt's last hidden state: [1, D] -> fp32 logits [1, V]."""
    return _head(self._graphdef, self._state, hidden)


def breaks_for(prompt: Sequence[int], prefixes: Sequence[Sequence[int]]) -> tuple[int, ...]:
  """The lengths of `prefixes` that `prompt` starts with and extends: its chunk breaks."""
  out = set()
  for prefix in prefixes:
    n = len(prefix)
    if 0 < n < len(prompt) and tuple(prompt[:n]) == tuple(prefix):
      out.add(n)
  return tuple(sorted(out))
