"""Reward-model training: Bradley-Terry on preference pairs, or attribute regression.

    config.reward.objective   bradley_terry | regression
    config.reward.bt_loss     plain | margin | scaled (HelpSteer2-Preference's |label|-scaled loss)
    config.reward.labels      output names (regression: the attributes; Bradley-Terry: ("reward",))
    config.reward.score_output  Bradley-Terry: the output compared ('' = the first). HelpSteer2-
                              Preference's stage 2 starts from a 9-output regression model with its
                              head and compares `helpfulness` (slot 4), as NeMo-Aligner's scaled_bt does

Pair batches run chosen and rejected responses through the model as one [2B, T] batch. Losses are
returned as sums with the number of pairs (or present labels) as weight, so gradient accumulation
and padding rows of a partial batch are exact.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Optional, cast

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from helpsteer_jax import storage
from helpsteer_jax.checkpoints import reward as reward_io
from helpsteer_jax.checkpoints.pretrained import load_pretrained
from helpsteer_jax.checkpoints.reward import save_reward_model
from helpsteer_jax.models.create import create_sharded_module
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.train import model_setup
from helpsteer_jax.train.reward_losses import bradley_terry_loss, masked_mse, pairwise_metrics
from helpsteer_jax.train.step import Batch, LossOutput
from helpsteer_jax.train.task_base import TaskBase

logger = logging.getLogger(__name__)

OBJECTIVES = ("bradley_terry", "regression")


def bradley_terry_step_loss(
  model: RewardModel, batch: Batch, rng: jax.Array, kind: str = "plain", output: int = 0
) -> LossOutput:
  """batch: chosen_/rejected_input_ids and _input_mask [B, T], label_magnitude [B], example_mask [B];
  `output`: the model output that is the reward."""
  del rng
  b = batch["chosen_input_ids"].shape[0]
  ids = jnp.concatenate([batch["chosen_input_ids"], batch["rejected_input_ids"]], axis=0)
  mask = jnp.concatenate([batch["chosen_input_mask"], batch["rejected_input_mask"]], axis=0)
  scores = model(ids, mask)[:, output]  # [2B]
  chosen, rejected = scores[:b], scores[b:]
  weights = batch["example_mask"].astype(jnp.float32)
  count = jnp.sum(weights)
  mean_loss = bradley_terry_loss(kind, chosen, rejected, batch["label_magnitude"], weights)
  stats = pairwise_metrics(chosen, rejected, weights)
  return LossOutput(
    total=mean_loss * count,
    weight=count,
    metrics={"accuracy": stats["accuracy"] * count, "margin": stats["margin"] * count},
  )


def regression_step_loss(model: RewardModel, batch: Batch, rng: jax.Array) -> LossOutput:
  """batch: input_ids, input_mask [B, T], targets [B, O] (-100 = missing), example_mask [B]."""
  del rng
  predictions = model(batch["input_ids"], batch["input_mask"])
  mean_loss, stats = masked_mse(predictions, batch["targets"], batch["example_mask"])
  count = stats["labels_present"]
  return LossOutput(total=mean_loss * count, weight=count)


def _is_reward_folder(path: str) -> bool:
  config_file = storage.join(path, "config.json")
  if not storage.is_file(config_file):
    return False
  with storage.open_file(config_file) as f:
    archs = json.load(f).get("architectures") or []
  return any("SequenceClassification" in a for a in archs)


def reward_model_from_gguf(
  path: str, num_outputs: int, sharding: Optional[ShardingContext], seed: int, **overrides: Any
) -> RewardModel:
  """A new reward model whose trunk is a GGUF causal LM's (e.g. the embedded SmolLM2)."""
  lm, _ = load_pretrained(path, sharding=sharding, show_progress=False, **overrides)
  # create_sharded_module returns what `make` builds, typed as any module.
  rm = cast(
    RewardModel,
    create_sharded_module(
      lambda rngs, ctx: RewardModel(lm.config, num_outputs, rngs=rngs, sharding=ctx), sharding, seed
    ),
  )
  trunk_params = nnx.state(rm.trunk, nnx.Param)
  lm_params = nnx.state(lm, nnx.Param)
  # The trunk is the LM without its output layer: copy every parameter they share.
  shared = {k: v for k, v in lm_params.items() if k in trunk_params}
  nnx.update(rm.trunk, nnx.State(shared))
  return rm


class RewardTask(TaskBase):
  """Bradley-Terry (Edit RM, Select) or multi-attribute regression (HelpSteer/2, SteerLM)."""

  def __init__(self, config: ml_collections.ConfigDict):
    if config.reward.objective not in OBJECTIVES:
      raise ValueError(f"reward.objective={config.reward.objective!r}; expected one of {OBJECTIVES}")
    super().__init__(config)

  @property
  def labels(self) -> tuple[str, ...]:
    return tuple(self.config.reward.labels)

  def score_output(self) -> int:
    """Index of the output Bradley-Terry compares (`reward.score_output` by name, '' = the first)."""
    name = self.config.reward.get("score_output", "")
    if not name:
      return 0
    if name not in self.labels:
      raise ValueError(f"reward.score_output={name!r} is not one of reward.labels {list(self.labels)}")
    return self.labels.index(name)

  def abstract_model(self, sharding: Optional[ShardingContext]) -> RewardModel:
    config = model_setup.model_config(self.config)
    return nnx.eval_shape(lambda: RewardModel(config, len(self.labels), rngs=nnx.Rngs(0), sharding=sharding))

  def build_model(self, config: ml_collections.ConfigDict, sharding: ShardingContext) -> RewardModel:
    path = model_setup.init_weights_path(config)
    overrides = model_setup.model_overrides(config)
    seed = config.seed
    if not path:
      model_cfg = model_setup.model_config(config)
      return cast(
        RewardModel,
        create_sharded_module(
          lambda rngs, ctx: RewardModel(model_cfg, len(self.labels), rngs=rngs, sharding=ctx), sharding, seed
        ),
      )
    if path.endswith(".gguf"):
      return reward_model_from_gguf(path, len(self.labels), sharding, seed, **overrides)
    if _is_reward_folder(path):
      model, _ = reward_io.load_reward_model(path, sharding=sharding, **overrides)
      if model.num_outputs != len(self.labels):
        raise ValueError(f"{path} has {model.num_outputs} outputs; reward.labels has {len(self.labels)}")
      return model
    model, _ = reward_io.reward_model_from_causal_lm(path, len(self.labels), seed=seed, sharding=sharding, **overrides)
    return model

  def loss_fn(self):
    if self.config.reward.objective == "regression":
      return regression_step_loss
    return functools.partial(bradley_terry_step_loss, kind=self.config.reward.bt_loss, output=self.score_output())

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    b, t = int(self.config.data.batch_size), int(self.config.data.seq_len)
    ids, mask = jax.ShapeDtypeStruct((b, t), jnp.int32), jax.ShapeDtypeStruct((b, t), jnp.bool_)
    rows = jax.ShapeDtypeStruct((b,), jnp.float32)
    if self.config.reward.objective == "regression":
      return {
        "input_ids": ids,
        "input_mask": mask,
        "example_mask": rows,
        "targets": jax.ShapeDtypeStruct((b, len(self.labels)), jnp.float32),
      }
    return {
      "chosen_input_ids": ids,
      "chosen_input_mask": mask,
      "rejected_input_ids": ids,
      "rejected_input_mask": mask,
      "label_magnitude": rows,
      "example_mask": rows,
      "pair_kind": jax.ShapeDtypeStruct((b,), jnp.int32),
    }

  def export(self, model: RewardModel, out_dir: str) -> None:
    save_reward_model(model, self.tokenizer, out_dir, labels=self.labels, show_progress=self.config.progress)
