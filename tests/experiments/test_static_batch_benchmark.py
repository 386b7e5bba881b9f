"""The benchmarks' static batch reference (experiments/benchmarks/static_batch.py) decodes what the
engine and a plain argmax loop decode: the throughput it is measured against is of the same work."""

import importlib.util
import pathlib

import pytest

from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens
from helpsteer_jax.testing.decode_reference import greedy_reference

# Runs searches or compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

PATH = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "static_batch.py"


def _static_batch():
  spec = importlib.util.spec_from_file_location("static_batch", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_static_batch_gives_the_engines_greedy_tokens(model):
  prompts = [[5, 6, 7], list(range(1, 12)), [42]]
  settings = SamplingSettings(max_new_tokens=8)
  static = _static_batch().sample_tokens_static(model, prompts, settings)
  assert static == sample_tokens(model, prompts, settings)
  assert [s[0] for s in static] == [greedy_reference(model, p, 8) for p in prompts]
