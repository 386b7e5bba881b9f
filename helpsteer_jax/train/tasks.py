"""Trainers as tasks for the shared loop, chosen by `config.trainer`.

Each task says how to build its model, its data and its loss; `run_training` hands it to
`loop.train_and_evaluate` and, at the end, exports the weights in HF format if asked (a write
that fails names the export folder and file).
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.pretrained import save_pretrained
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.train import model_setup
from helpsteer_jax.train.best_checkpoint import restore_best_params
from helpsteer_jax.train.loop import Task, train_and_evaluate
from helpsteer_jax.train.reward import RewardTask
from helpsteer_jax.train.rloo import RLOOTask
from helpsteer_jax.train.run_record import summary_lines
from helpsteer_jax.train.sft import sft_loss
from helpsteer_jax.train.task_base import TaskBase

logger = logging.getLogger(__name__)


class SFTTask(TaskBase):
  """Next-token SFT on chat data (Feedback, Edit, attribute-conditioned SteerLM)."""

  def abstract_model(self, sharding: Optional[ShardingContext]) -> Llama:
    config = model_setup.model_config(self.config)
    return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding))

  def build_model(self, config: ml_collections.ConfigDict, sharding: ShardingContext) -> Llama:
    return model_setup.build_policy(config, sharding)

  def loss_fn(self):
    return functools.partial(sft_loss, chunk=self.config.loss_chunk)

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch's shapes (what the planner compiles for)."""
    b, t = int(self.config.data.batch_size), int(self.config.data.seq_len)
    return {
      "input_ids": jax.ShapeDtypeStruct((b, t), jnp.int32),
      "targets": jax.ShapeDtypeStruct((b, t), jnp.int32),
      "loss_weights": jax.ShapeDtypeStruct((b, t), jnp.float32),
      "segment_ids": jax.ShapeDtypeStruct((b, t), jnp.int32),
      "positions": jax.ShapeDtypeStruct((b, t), jnp.int32),
    }

  def export(self, model: Llama, out_dir: str) -> None:
    save_pretrained(model, self.tokenizer, out_dir, show_progress=self.config.progress)


def _reward_task(config):
  return RewardTask(config)


def _rloo_task(config):
  return RLOOTask(config)


TASKS = {"sft": SFTTask, "reward": _reward_task, "rloo": _rloo_task}


def make_task(config: ml_collections.ConfigDict):
  name = config.trainer
  if name not in TASKS:
    raise KeyError(f"config.trainer={name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name](config)


def model_to_export(result, workdir: str, export_from: str) -> nnx.Module:
  """The trained model (`latest`) or the one of the kept best checkpoint (`best`), bit for bit."""
  if export_from == "latest":
    return result.model()
  params, step, info = restore_best_params(workdir, result.state.params)
  logger.info("exporting the best checkpoint: step %d (%s %.6g)", step, info.get("metric"), info.get("value"))
  return nnx.merge(result.graphdef, params, result.rest)


def export_model(task: Task, model: nnx.Module, export_dir: str, workdir: str) -> None:
  """`task.export(model, export_dir)`; a write that fails names the export folder (and the file,
  where the OS gives it) and says the checkpoints are intact, so the same command can export
  again once the folder is fixed."""
  try:
    task.export(model, export_dir)
  except OSError as e:
    detail = str(e) if e.filename else (e.strerror or str(e))
    message = (
      f"{export_dir}: cannot write the export of the trained weights ({detail}); the "
      f"checkpoints in {storage.join(workdir, 'checkpoints')} are intact: free the space or "
      "fix the folder and rerun the same command to export"
    )
    raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from None


def run_training(config: ml_collections.ConfigDict, workdir: str):
  task = make_task(config)
  result = train_and_evaluate(config, workdir, task)
  export_dir = config.export_dir
  export_from = config.export_from
  exported = export_dir and not result.preempted and result.step >= result.total_steps
  if exported:
    export_model(task, model_to_export(result, workdir, export_from), export_dir, workdir)
    logger.info("exported the %s weights to %s", export_from, export_dir)
  if jax.process_index() == 0:
    print(
      "\n".join(
        summary_lines(
          storage.as_path(storage.absolute(workdir)),
          result.step,
          result.total_steps,
          result.tokens,
          result.preempted,
          result.best_step,
          export_dir if exported else "",
          export_from,
        )
      ),
      flush=True,
    )
  return result
