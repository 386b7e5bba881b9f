"""Shared by the sampler and engine tests: a tiny random Llama and the greedy answer of a plain
argmax loop over full forward passes (the reference every decode path must equal)."""

import jax.numpy as jnp
import pytest
from flax import nnx

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.llama import Llama


@pytest.fixture(scope="module")
def model():
  return Llama(get_preset("tiny"), rngs=nnx.Rngs(0))


def greedy_reference(model, prompt, steps):
  ids = list(prompt)
  for _ in range(steps):
    ids.append(int(jnp.argmax(model(jnp.asarray([ids]))[0, -1])))
  return ids[len(prompt):]
