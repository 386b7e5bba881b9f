"""Reward models: a Llama trunk and a linear head on the final hidden state of the last real token.

One output is the scalar head of Bradley-Terry and Select reward models; several outputs are the
multi-attribute regression head of HelpSteer / HelpSteer2 (e.g. 5 or 9 attributes).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from helpsteer_jax.models.config import LlamaConfig
from helpsteer_jax.models.layers import make_param
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel import axes as ax
from helpsteer_jax.parallel.partitioning import ShardingContext


def last_real_index(input_mask: jax.Array) -> jax.Array:
  """[B, T] bool -> [B] index of the last True (works for left and right padding)."""
  t = input_mask.shape[1]
  return t - 1 - jnp.argmax(input_mask[:, ::-1], axis=1)


class RewardModel(nnx.Module):
  """`rm(input_ids [B, T], input_mask [B, T]) -> scores [B, num_outputs]` (fp32)."""

  def __init__(
    self,
    config: LlamaConfig,
    num_outputs: int = 1,
    *,
    rngs: nnx.Rngs,
    sharding: Optional[ShardingContext] = None,
  ):
    self.num_outputs = num_outputs
    self.trunk = Llama(config, rngs=rngs, sharding=sharding, with_lm_head=False)
    # Output axis unsharded: it has 1 to 9 entries.
    self.head = make_param(
      rngs, (config.hidden_size, num_outputs), (ax.EMBED, None), config.weight_dtype, fan_in=config.hidden_size
    )

  @property
  def config(self) -> LlamaConfig:
    return self.trunk.config

  def __call__(
    self, input_ids: jax.Array, input_mask: Optional[jax.Array] = None, segment_ids: Optional[jax.Array] = None
  ) -> jax.Array:
    if input_mask is None:
      input_mask = jnp.ones(input_ids.shape, bool)
    hidden, _ = self.trunk.hidden_states(input_ids, input_mask=input_mask, segment_ids=segment_ids)
    last = jnp.take_along_axis(hidden, last_real_index(input_mask)[:, None, None], axis=1)[:, 0]
    return head_scores(last, self.head[...])


def head_scores(hidden: jax.Array, head: jax.Array) -> jax.Array:
  """A reward head on final-norm hidden states [B, D] -> fp32 scores [B, O]."""
  return jnp.einsum("BD,DO->BO", hidden, head.astype(hidden.dtype)).astype(jnp.float32)
