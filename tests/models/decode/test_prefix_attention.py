"""Shared prefixes read once (models/decode/prefix_attention.py): a slot's attention over a prefix
table entry and its own row is the per-slot attention over the same positions held in its row,
bit for bit, whatever the group size, keys layout and how many slots share an entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.models.decode.decode_attention import CacheRead, per_slot_decode_attention
from helpsteer_jax.models.decode.prefix_attention import shared_prefix_decode_attention

LAYERS, SLOTS, KV, GROUP, HEAD, BLOCK = 2, 7, 2, 3, 8, 16
ENTRIES, TABLE_LENGTH, OWN_LENGTH = 3, 48, 48


def _case(seed: int, transposed: bool):
  """A full cache of 96 positions per slot whose first positions are shared by slots of one entry,
  and the same content split into a table of entries and rows of what follows each prefix."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  table_k, table_v = normal(LAYERS, ENTRIES, KV, TABLE_LENGTH, HEAD), normal(LAYERS, ENTRIES, KV, TABLE_LENGTH, HEAD)
  prefix_lengths = np.asarray([32, 48, 16], np.int32)
  of_slot = np.asarray([0, 1, 0, -1, 0, 1, 2], np.int32)  # three slots on entry 0, one with none
  lengths = np.asarray([40, 95, 33, 45, 64, 49, 16], np.int32)  # at, inside and past block ends
  full = TABLE_LENGTH + OWN_LENGTH
  full_k, full_v = normal(LAYERS, SLOTS, KV, full, HEAD), normal(LAYERS, SLOTS, KV, full, HEAD)
  own_k, own_v = np.zeros((LAYERS, SLOTS, KV, OWN_LENGTH, HEAD), np.float32), np.zeros_like(full_k[..., :OWN_LENGTH, :])
  for b, entry in enumerate(of_slot):
    base = prefix_lengths[entry] if entry >= 0 else 0
    if entry >= 0:
      full_k[:, b, :, :base], full_v[:, b, :, :base] = table_k[:, entry, :, :base], table_v[:, entry, :, :base]
    rest = min(full - base, OWN_LENGTH)
    own_k[:, b, :, :rest], own_v[:, b, :, :rest] = (
      full_k[:, b, :, base : base + rest],
      full_v[:, b, :, base : base + rest],
    )
  keys = (lambda a: jnp.asarray(a.swapaxes(3, 4))) if transposed else jnp.asarray
  q, k_new, v_new = normal(SLOTS, KV * GROUP, HEAD), normal(SLOTS, KV, HEAD), normal(SLOTS, KV, HEAD)
  return dict(
    q=jnp.asarray(q),
    k_new=jnp.asarray(k_new),
    v_new=jnp.asarray(v_new),
    full=(keys(full_k), jnp.asarray(full_v)),
    own=(keys(own_k), jnp.asarray(own_v)),
    table=(keys(table_k), jnp.asarray(table_v)),
    prefix_lengths=jnp.asarray(prefix_lengths),
    of_slot=jnp.asarray(of_slot),
    lengths=jnp.asarray(lengths),
  )


@pytest.mark.parametrize("group,transposed", [(1, False), (2, True), (8, True), (8, False)])
def test_prefix_table_gives_the_per_slot_attention_bit_for_bit(group, transposed):
  c = _case(0, transposed)
  active = jnp.asarray([True, True, True, True, False, True, True])
  layer = 1
  want, _ = per_slot_decode_attention(
    c["q"],
    c["k_new"],
    c["v_new"],
    CacheRead(*c["full"], layer, BLOCK, keys_transposed=transposed),
    c["lengths"],
    active,
  )
  got, cache, table = shared_prefix_decode_attention(
    c["q"],
    c["k_new"],
    c["v_new"],
    CacheRead(*c["own"], layer, BLOCK, keys_transposed=transposed),
    CacheRead(*c["table"], layer, BLOCK, keys_transposed=transposed),
    c["prefix_lengths"],
    c["of_slot"],
    c["lengths"],
    active,
    group=group,
  )
  live = np.asarray(active)
  np.testing.assert_array_equal(np.asarray(got)[live], np.asarray(want)[live])
  assert cache[0] is c["own"][0] and table[1] is c["table"][1]


def test_threaded_through_its_loops_under_jit():
  c = _case(1, True)
  active = jnp.ones((SLOTS,), bool)

  @jax.jit
  def run(own_k, own_v, table_k, table_v):
    return shared_prefix_decode_attention(
      c["q"],
      c["k_new"],
      c["v_new"],
      CacheRead(own_k, own_v, 0, BLOCK, thread=True, keys_transposed=True),
      CacheRead(table_k, table_v, 0, BLOCK, thread=True, keys_transposed=True),
      c["prefix_lengths"],
      c["of_slot"],
      c["lengths"],
      active,
    )

  got, (own_k, _), (table_k, _) = run(*c["own"], *c["table"])
  per_slot = jax.jit(
    lambda k, v: per_slot_decode_attention(
      c["q"], c["k_new"], c["v_new"], CacheRead(k, v, 0, BLOCK, thread=True, keys_transposed=True), c["lengths"], active
    )[0]
  )
  np.testing.assert_array_equal(np.asarray(got), np.asarray(per_slot(*c["full"])))
  np.testing.assert_array_equal(np.asarray(own_k), np.asarray(c["own"][0]))
  np.testing.assert_array_equal(np.asarray(table_k), np.asarray(c["table"][0]))
