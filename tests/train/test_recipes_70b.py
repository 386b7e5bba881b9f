"""Every 70B experiment carries its published recipe (data, base model, length, learning rate,
schedule, warmup, global batch, row length, packing, initialisation), with its sources in the
docstring; the planner prints each recipe's steps, tokens, FLOPs and hours."""

import importlib.util
import os
import pathlib
import sys

import pytest

from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.train.batch_plan import plan_batch
from helpsteer_jax.train.recipe_cost import recipe_cost
from helpsteer_jax.train.run_length import planned_total_steps

REPO = pathlib.Path(__file__).resolve().parents[2]


def load(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("size=70b"), module.__doc__


def steps(config) -> int:
  return planned_total_steps(config, int(config.data.batch_size))


def test_feedback_and_edit_sft():
  for name, want_steps in (("feedback_sft", 232_680 // 128), ("edit_sft", 82_428 // 128)):
    config, doc = load(name)
    assert config.init_weights.endswith("Llama-3.3-70B-Instruct")
    assert config.num_epochs == 1 and config.global_batch_size == 128 == config.data.batch_size
    assert config.data.seq_len == 4096 and not config.data.packing
    assert steps(config) == want_steps, name
    assert "published" in doc and "unpublished" in doc and f"{want_steps:,} steps" in doc


def test_edit_rm_keeps_its_best_validation_checkpoint():
  config, doc = load("edit_rm")
  assert config.trainer == "reward" and config.reward.objective == "bradley_terry"
  assert config.keep_best_by == "loss" and config.export_from == "best" and config.eval_every > 0
  assert config.eval_data.dataset == "helpsteer3_edit_quality" and config.eval_data.split == "validation"
  assert config.global_batch_size == 128 and steps(config) == 2 * (6_220 // 128)
  assert steps(config) > 80, "the paper's chosen step 80 must lie inside the run"
  assert "step 80" in doc


def test_edit_rloo_is_nemo_aligner_reinforce():
  config, doc = load("edit_rloo")
  assert config.total_steps == 45 and config.num_epochs == 0
  assert config.optim.learning_rate == 1e-6 and config.optim.schedule == "constant"
  assert config.optim.warmup_steps == 0 and config.optim.weight_decay == 0.01
  assert config.optim.grad_clip_norm == 1.0
  assert config.rloo.beta == 0.01 and config.rloo.kl_estimator == "abs" and config.rloo.num_samples == 4
  assert config.rloo.temperature == 1.0 and config.rloo.unfinished == "exclude_from_baseline"
  assert config.global_batch_size == 128 == config.data.batch_size * config.rloo.num_samples
  assert config.init_weights.endswith("Edit-SFT") and config.rloo.reward_model.endswith("Edit-RM")
  assert "step-45" in doc and "reinforce.rst" in doc


@pytest.mark.parametrize(
  "name, base", [("helpsteer2_rm", "Llama-3-70B"), ("helpsteer2_preference_stage1", "Llama-3.1-70B-Instruct")]
)
def test_helpsteer2_regression_reward_models(name, base):
  config, doc = load(name)
  assert config.init_weights.endswith(base)
  assert config.reward.objective == "regression" and tuple(config.reward.labels) == STEERLM_ATTRIBUTES
  assert config.total_steps == 317 and config.num_epochs == 0 and config.global_batch_size == 128
  # 317 steps of 128 are the train split twice (NeMo-Aligner's train_reg_2_epoch.jsonl).
  assert 317 == (2 * 20_324) // 128
  assert config.optim.learning_rate == 2e-6 and config.optim.schedule == "constant"
  assert config.optim.warmup_steps == 10 and not config.data.packing and config.data.seq_len == 4096
  assert "steerlm.rst" in doc
  if name == "helpsteer2_preference_stage1":
    assert config.data.builder.labelled_attributes == "helpfulness"


def test_helpsteer2_preference_stage2_starts_from_stage1_with_its_head():
  stage1, _ = load("helpsteer2_preference_stage1")
  config, doc = load("helpsteer2_preference_stage2")
  assert config.init_weights == stage1.export_dir  # a reward folder: the head is loaded with the trunk
  assert config.reward.bt_loss == "scaled" and config.reward.score_output == "helpfulness"
  assert tuple(config.reward.labels) == tuple(stage1.reward.labels)
  assert config.total_steps == 105 and config.optim.learning_rate == 1e-6
  assert config.optim.schedule == "constant" and config.optim.warmup_steps == 10
  assert config.global_batch_size == 64 and not config.data.shuffle  # 64 pairs = 128 responses
  assert "load_rm_head_weights" in doc


def test_steerlm_acsft():
  config, doc = load("steerlm_acsft")
  assert config.num_epochs == 2 and steps(config) == 2 * (20_324 // 128)
  assert config.optim.learning_rate == 6e-6 and config.optim.schedule == "cosine"
  assert abs(config.optim.learning_rate * config.optim.final_lr_fraction - 5e-6) < 1e-12
  assert config.optim.constant_steps == 200 and config.optim.weight_decay == 0.01
  assert config.global_batch_size == 128 and config.data.seq_len == 4096
  assert "unpublished" in doc


@pytest.mark.parametrize("mesh", [(1, 8, 8), (1, 64, 1), (1, 128, 1), (2, 16, 2)])
def test_global_batch_128_splits_over_docs_meshes(mesh):
  config, _ = load("feedback_sft")
  dp = mesh[0] * mesh[1]  # rows split over data x fsdp
  plan = plan_batch(config, dp)
  assert plan.micro_batch_size == 1 and plan.grad_accum_steps * dp == 128


def test_recipe_costs_follow_the_steps():
  sft, _ = load("edit_sft")
  cost = recipe_cost(sft)
  assert cost.steps == steps(sft) and cost.tokens == cost.steps * 128 * 4096
  assert 6 * 70e9 * cost.tokens < cost.flops < 7 * 70e9 * cost.tokens  # 6 N plus attention


@pytest.mark.entry
def test_planner_prints_every_recipe():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  out = run_entry([sys.executable, "-m", "helpsteer_jax.plan", "--recipes"], cwd=REPO, env=env, timeout=300)
  print(out)
  for name in (
    "feedback_sft_70b",
    "edit_sft_70b",
    "edit_rm_70b",
    "edit_rloo_70b",
    "helpsteer2_rm_70b",
    "helpsteer2_preference_stage1_70b",
    "helpsteer2_preference_stage2_70b",
    "steerlm_acsft_70b",
  ):
    config, _ = load(name.removesuffix("_70b"))
    row = next(l for l in out.splitlines() if l.startswith(f"| {name} |"))
    assert f"| {steps(config):,} |" in row, row
  assert "64 x TPU v5p" in out and "64 x H100" in out


def tiny(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("tiny")


def test_stage1_rows_keep_only_helpfulness(bundled_data, embedded_gguf_path):
  from helpsteer_jax.data.examples import MISSING_LABEL
  from helpsteer_jax.train.tasks import make_task

  batch = next(make_task(tiny("helpsteer2_preference_stage1")).train_data(0, 1))
  helpfulness = STEERLM_ATTRIBUTES.index("helpfulness")
  real = batch["example_mask"] > 0
  targets = batch["targets"][real]
  assert targets.shape[1] == 9 and (targets[:, helpfulness] != MISSING_LABEL).all()
  others = [i for i in range(9) if i != helpfulness]
  assert (targets[:, others] == MISSING_LABEL).all()


def test_stage2_compares_the_helpfulness_output():
  import jax.numpy as jnp

  from helpsteer_jax.train.reward import bradley_terry_step_loss
  from helpsteer_jax.train.tasks import make_task

  task = make_task(tiny("helpsteer2_preference_stage2"))
  index = task.score_output()
  assert index == STEERLM_ATTRIBUTES.index("helpfulness")

  class Scores:  # a stand-in reward model: chosen rows score high on that output only
    def __call__(self, ids, mask):
      out = jnp.zeros((ids.shape[0], 9))
      return out.at[: ids.shape[0] // 2, index].set(5.0)

  batch = {
    "chosen_input_ids": jnp.zeros((2, 4), jnp.int32),
    "rejected_input_ids": jnp.zeros((2, 4), jnp.int32),
    "chosen_input_mask": jnp.ones((2, 4), bool),
    "rejected_input_mask": jnp.ones((2, 4), bool),
    "label_magnitude": jnp.asarray([1.0, 3.0]),
    "example_mask": jnp.ones(2),
  }
  out = task.loss_fn()(Scores(), batch, None)
  # Scaled loss |label| * -log sigmoid(5 - 0), summed over the 2 pairs; accuracy 1.
  want = (1.0 + 3.0) * float(jnp.log1p(jnp.exp(-5.0)))
  assert abs(float(out.total) - want) < 1e-5 and float(out.metrics["accuracy"]) == 2.0
  wrong_output = bradley_terry_step_loss(Scores(), batch, None, kind="scaled", output=0)
  # Slot 0 does not tell them apart: every pair at -log sigmoid(0) = log 2.
  assert abs(float(wrong_output.total) - 4.0 * float(jnp.log(2.0))) < 1e-5
