"""Top-p and top-k in the engine's per-row sampler, against a nucleus worked out with numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.sampling.rules import sample_next, sample_rows

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def hf_nucleus_size(probs: np.ndarray, top_p: float) -> int:
  """How many of the most likely tokens top-p keeps, as transformers' TopPLogitsWarper does: the
  whole vocabulary sorted, its full-vocabulary probabilities accumulated, a token kept while the
  mass before it is below top_p."""
  ordered = np.sort(probs)[::-1].astype(np.float64)
  before = np.cumsum(ordered) - ordered
  return int(np.sum(before < top_p))


def flat_tail_row(vocab: int = 4096) -> np.ndarray:
  """One token at 0.6 and 1500 sharing 0.4: the top-p 0.7 nucleus holds about 376 tokens of the
  full vocabulary; renormalised over only its 1024 most likely tokens it would hold 43."""
  probs = np.full(vocab, 1e-12)
  probs[0] = 0.6
  probs[1:1501] = 0.4 / 1500
  return np.log(probs / probs.sum()).astype(np.float32)


def peaked_row(vocab: int = 4096) -> np.ndarray:
  probs = np.full(vocab, 1e-9)
  probs[:4] = [0.5, 0.3, 0.15, 0.05]
  return np.log(probs / probs.sum()).astype(np.float32)


def draws(logits, top_k, top_p, n=2000, seed=0):
  """n draws per row, each row with its own key: [n, B]."""
  b = logits.shape[0]
  keys = jax.random.split(jax.random.key(seed), n * b).reshape(n, b)
  f = jax.jit(
    jax.vmap(
      lambda k: sample_rows(
        jnp.asarray(logits), k, jnp.ones((b,)), jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, jnp.float32)
      )
    )
  )
  return np.asarray(f(keys))


def test_top_p_mass_is_a_share_of_the_whole_vocabulary():
  row = flat_tail_row()
  size = hf_nucleus_size(np.exp(row.astype(np.float64)), 0.7)
  assert 370 < size < 380
  picks = draws(row[None], [0], [0.7])[:, 0]
  assert picks.max() < size  # token ids are ranks here: nothing outside the nucleus
  # Far past where a nucleus renormalised over 1024 candidates would stop (43 tokens).
  assert picks.max() > 200
  # The first token's share of the nucleus: 0.6 / (0.6 + 375 * 0.4 / 1500) = 0.857.
  assert abs(np.mean(picks == 0) - 0.857) < 0.03
  # The static sampler keeps the same nucleus.
  keys = jax.random.split(jax.random.key(1), 400)
  static = jax.jit(jax.vmap(lambda k: sample_next(jnp.asarray(row[None]), k, 1.0, top_p=0.7)))
  picks = np.asarray(static(keys))[:, 0]
  assert picks.max() < size and picks.max() > 100


def test_a_rows_draw_does_not_depend_on_which_candidates_its_neighbours_need():
  # The peaked row's nucleus lies in the 128 fast candidates, the flat one's does not: sampled
  # together, each still draws what it draws alone.
  peaked, flat = peaked_row(), flat_tail_row()
  both = draws(np.stack([peaked, flat]), [0, 0], [0.9, 0.7], n=200)
  alone_peaked = draws(peaked[None], [0], [0.9], n=400)[0::2, 0]
  keys = jax.random.split(jax.random.key(0), 400).reshape(200, 2)
  one = lambda row, k, p: jax.jit(
    jax.vmap(
      lambda kk: sample_rows(
        jnp.asarray(row[None]), kk[None], jnp.ones((1,)), jnp.zeros((1,), jnp.int32), jnp.full((1,), p)
      )
    )
  )(k)
  assert (np.asarray(one(peaked, keys[:, 0], 0.9))[:, 0] == both[:, 0]).all()
  assert (np.asarray(one(flat, keys[:, 1], 0.7))[:, 0] == both[:, 1]).all()
  assert set(alone_peaked) <= {0, 1, 2}  # 0.5 + 0.3 + 0.15 covers 0.9


def test_top_k_and_top_p_together_and_top_k_past_the_fast_candidates():
  flat = flat_tail_row()
  # top-k 300 with top-p 0.9: the nucleus of the 300 survivors, renormalised over them
  # (0.6 + 299 * 0.4 / 1500 = 0.68): 46 tokens, all within the fast candidates, though a top-k
  # above them takes the long path.
  survivors = np.exp(np.sort(flat.astype(np.float64))[::-1][:300])
  size = hf_nucleus_size(survivors / survivors.sum(), 0.9)
  assert size == 46
  picks = draws(flat[None], [300], [0.9])[:, 0]
  assert picks.max() < size and picks.max() > size // 2
  # top-k alone, above the 128 fast candidates: every survivor can come out, nothing past them.
  picks = draws(flat[None], [200], [1.0], n=4000)[:, 0]
  assert picks.max() < 200 and picks.max() > 180


def test_the_fast_candidates_draw_what_the_long_path_would():
  # Each candidate's noise comes from its own counter (partitionable threefry): a row whose nucleus
  # lies in the 128 fast candidates draws the token it would draw from 1024.
  rows = jnp.asarray(np.stack([peaked_row(), flat_tail_row()]))
  keys = jax.random.split(jax.random.key(3), 600).reshape(300, 2)
  draw = lambda fast: np.asarray(
    jax.jit(
      jax.vmap(
        lambda k: sample_rows(rows, k, jnp.ones(2), jnp.zeros(2, jnp.int32), jnp.asarray([0.9, 0.7]), 1024, fast)
      )
    )(keys)
  )
  fast, long = draw(128), draw(1024)
  assert (fast == long).all()
  assert set(fast[:, 0]) == {0, 1, 2}
