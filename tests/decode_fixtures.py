"""Shared by the sampler and engine tests: a tiny random Llama and the greedy answer of a plain
argmax loop over full forward passes (the reference every decode path must equal)."""

from functools import partial

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.llama import Llama


@pytest.fixture(scope="module")
def model():
  return Llama(get_preset("tiny"), rngs=nnx.Rngs(0))


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
  return ids[len(prompt):]
