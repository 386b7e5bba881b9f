"""The sampler on a tiny random model: greedy == argmax loop, seeds, stops, n samples, buckets."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.sampling.rules import sample_next
from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens
from helpsteer_jax.testing.decode_reference import greedy_reference

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_greedy_batch_of_different_lengths_equals_argmax_loop(model):
  prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [42]]
  out = sample_tokens(model, prompts, SamplingSettings(max_new_tokens=10))
  for prompt, samples in zip(prompts, out):
    assert samples[0] == greedy_reference(model, prompt, 10)


def test_seed_determinism_and_n_samples(model):
  settings = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=0.95)
  a = sample_tokens(model, [[3, 4, 5], [9, 9]], settings, n=3, seed=11)
  b = sample_tokens(model, [[3, 4, 5], [9, 9]], settings, n=3, seed=11)
  c = sample_tokens(model, [[3, 4, 5], [9, 9]], settings, n=3, seed=12)
  assert a == b and a != c
  assert len(a) == 2 and all(len(s) == 3 for s in a)
  assert len({tuple(x) for x in a[0]}) > 1  # the samples of one prompt differ


def test_stop_tokens_end_each_row(model):
  free = sample_tokens(model, [[5, 6, 7]], SamplingSettings(max_new_tokens=10))[0][0]
  stop = free[3]
  stopped = sample_tokens(model, [[5, 6, 7]], SamplingSettings(max_new_tokens=10, stop_token_ids=(stop, 999)))
  assert stopped[0][0] == free[: free.index(stop)]


def test_no_prompt_length_compiles_a_new_program(model):
  from helpsteer_jax.sampling import chunked_prefill, engine_api

  settings = SamplingSettings(max_new_tokens=4)
  # One prompt per chunk program: 128 tokens, and a last chunk of 16, 32 or 64.
  for n in (16, 32, 64, 128):
    sample_tokens(model, [list(range(1, n + 1))], settings)
  programs = lambda: (
    chunked_prefill._compute_chunk._cache_size(),
    chunked_prefill._copy_chunk._cache_size(),
    chunked_prefill._head._cache_size(),
    engine_api.decode_steps._cache_size(),
    engine_api.insert._cache_size(),
  )
  before = programs()
  # Prompts of any length, up to several chunks, run those programs.
  for length in (3, 7, 12, 19, 50, 100, 130, 300):
    sample_tokens(model, [list(range(1, length + 1))], settings)
  assert programs() == before


def test_top_k_one_is_greedy_and_top_p_keeps_the_nucleus():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  import jax

  keys = jax.random.split(jax.random.key(0), 200)
  picks = np.array([int(sample_next(logits, k, 1.0, top_k=1)[0]) for k in keys[:20]])
  assert (picks == 0).all()
  picks = np.array([int(sample_next(logits, k, 1.0, top_p=0.7)[0]) for k in keys])
  assert set(picks) == {0, 1}  # 0.5 + 0.3 covers 0.7; tokens 2 and 3 are cut


def test_bad_inputs(model):
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sample_tokens(model, [[1], []], SamplingSettings())
  with pytest.raises(ValueError, match="exceeds the model's context"):
    sample_tokens(model, [[1] * 500], SamplingSettings(max_new_tokens=64))
  with pytest.raises(ValueError, match="top_p"):
    SamplingSettings(top_p=1.5)
