"""The one training loop every trainer shares: `train_and_evaluate(config, workdir)`.

A trainer is a `Task`: it builds the model, its data and its loss; everything else lives here:
the mesh, the sharded train state, the jitted step (explicit shardings, donated state), the global
batch's split into micro-batches (`batch_plan`), the run's length in steps or epochs
(`run_length`), checkpoints and resume, preemption, metrics, progress, the eval loop and the
checkpoint of best held-out loss or accuracy (`best_checkpoint`).

Start-up order: the optimizer's values; mesh and batch split (a split that does not divide fails
here, before anything is loaded or compiled); the workdir's record of what produced it, checked
against this run (`run_record.check_workdir`: a resume that would change results is refused)
and only then `config.json`; training data and run length (with the warmup checked against it);
model, train state, step. A checkpoint save that fails in the background stops the run at the
next step, naming the step's folder and the OS error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from helpsteer_jax import storage
from helpsteer_jax.data.examples import DataError
from helpsteer_jax.data.run_folder import claim_run_folder
from helpsteer_jax.parallel import axes as ax
from helpsteer_jax.parallel.mesh_config import sharding_from_mesh_config
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.train import run_length, run_record
from helpsteer_jax.train.batch_plan import BatchPlan, data_parallel_size, plan_batch
from helpsteer_jax.train.best_checkpoint import BestCheckpoint, check_settings
from helpsteer_jax.train.checkpointing import Checkpointer, find_checkpoint, has_checkpoint
from helpsteer_jax.train.metrics_writer import MetricsWriter
from helpsteer_jax.train.optimizer import check_optim_config, check_schedule_length, make_optimizer
from helpsteer_jax.train.state import TrainState, abstract_train_state, init_state, train_state_shardings
from helpsteer_jax.train.step import LossFn, finalize_eval, make_eval_step, make_train_step

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient norm became NaN or inf; the message names the step."""


class ResumableIterator(Protocol):
  """Process-local batches (numpy dicts) and a small JSON-able position to restart from."""

  def __next__(self) -> dict[str, np.ndarray]: ...

  def get_state(self) -> dict: ...

  def set_state(self, state: dict) -> None: ...


class Task(Protocol):
  """What a trainer (SFT, reward model, RLOO) provides to the shared loop. `TaskBase` gives the
  defaults of `train_data`, `eval_data`, `prepare_batch` and `num_tokens`."""

  def build_model(self, config: ml_collections.ConfigDict, sharding: ShardingContext) -> nnx.Module:
    """The model with `config.init_weights` loaded, or randomly initialised; already sharded."""
    ...

  def loss_fn(self) -> LossFn: ...

  def train_data(self, process_index: int, process_count: int) -> ResumableIterator: ...

  def eval_data(self, process_index: int, process_count: int) -> Optional[Iterator[dict[str, np.ndarray]]]: ...

  def prepare_batch(self, local: Any, state: TrainState, graphdef: Any, rest: Any, step: int,
                    to_global: Callable[..., dict[str, jax.Array]]
                    ) -> tuple[dict[str, jax.Array], dict[str, float], int]:
    """(global batch, extra metrics, real tokens of the global batch) from what `train_data` gave
    (RLOO samples its rollouts here). `to_global(rows)` makes global arrays of this process's rows;
    `to_global(rows, whole=True)` of a whole global batch that every process holds."""
    ...

  def num_tokens(self, batch: dict[str, np.ndarray]) -> int:
    """Real (non-padding) tokens of a process-local batch, for tokens/s."""
    ...


# -- mesh and shardings -----------------------------------------------------------------------------

def sharding_from_config(config: ml_collections.ConfigDict) -> ShardingContext:
  """(data, fsdp, tensor) mesh from `config.mesh.shape` (-1 = the rest), rules from
  `config.mesh.rules` (pairs overriding DEFAULT_RULES by logical name)."""
  return sharding_from_mesh_config(config.get("mesh", None))


def batch_sharding(sharding: ShardingContext, ndim: int) -> NamedSharding:
  """Rows over (data, fsdp); every other dimension replicated."""
  return NamedSharding(sharding.mesh, sharding.spec((ax.ACT_BATCH,) + (None,) * (ndim - 1)))


def to_global_batch(local: dict[str, np.ndarray], sharding: ShardingContext,
                    whole: bool = False) -> dict[str, jax.Array]:
  """Each process's rows -> one global array per entry, rows split over (data, fsdp). With `whole`
  every process holds the whole global batch (RLOO's rollouts, sampled SPMD by every process) and
  each device takes its own rows of it."""
  if whole:
    return {k: jax.make_array_from_callback(v.shape, batch_sharding(sharding, v.ndim),
                                            lambda index, v=v: v[index]) for k, v in local.items()}
  return {k: jax.make_array_from_process_local_data(batch_sharding(sharding, v.ndim), v)
          for k, v in local.items()}


# -- preemption -------------------------------------------------------------------------------------

class PreemptionFlag:
  """Set by SIGTERM (what schedulers send before taking the machine); the loop then saves and exits."""

  def __init__(self):
    self.event = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logger.warning("SIGTERM received: saving a checkpoint at the end of this step, then exiting")
    self.event.set()

  def is_set(self) -> bool:
    local = self.event.is_set()
    if jax.process_count() == 1:
      return local
    # Every process must agree, or some would wait forever in the next collective.
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# -- the loop ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
  state: TrainState
  graphdef: Any
  rest: Any
  step: int
  last_metrics: dict[str, float]
  preempted: bool = False
  total_steps: int = 0
  best_step: Optional[int] = None  # step of the kept best checkpoint (None: no evaluation kept one)
  tokens: int = 0  # token positions of the batches trained by this invocation

  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.state.params, self.rest)


def _host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  bad = {k: v for k, v in metrics.items() if k in ("loss", "grad_norm") and not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(f"step {step}: non-finite {bad}; stopping (the last checkpoint is "
                             "intact; lower the learning rate or check the data of this step)")


def batch_plan_from_config(config: ml_collections.ConfigDict, sharding: ShardingContext) -> BatchPlan:
  """The global batch's split over this mesh (raises before any compile if it does not divide)."""
  return plan_batch(config, data_parallel_size(sharding))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainResult:
  """Trains `task` in `workdir`, resuming what is there; process 0 first checks the workdir
  writable and holds it for the run (`data/run_folder.py`), so a second run on it fails at once.
  Values no run can train with fail before that."""
  check_optim_config(config.optim)
  with claim_run_folder(workdir, what=f"training run {config.get('name', 'train')!r}",
                        enabled=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, task)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainResult:
  workdir_path = storage.as_path(storage.absolute(workdir))  # local or gs://
  is_main = jax.process_index() == 0
  keep_best_by = config.get("keep_best_by", "")
  check_settings(keep_best_by, config.get("export_from", "latest"))
  sharding = sharding_from_config(config)
  logger.info("mesh %s over %d devices (%d processes)", dict(sharding.mesh.shape), jax.device_count(),
              jax.process_count())
  batch_plan = batch_plan_from_config(config, sharding)
  logger.info("%s", batch_plan.describe())
  if is_main:
    workdir_path.mkdir(parents=True, exist_ok=True)
  # Every process checks (so all refuse together); process 0 records, then writes config.json.
  run_record.check_workdir(config, workdir_path, has_work=has_checkpoint(workdir_path / "checkpoints"),
                           write=is_main)
  if is_main:
    resolved = run_record.record_config(config, workdir_path)

  train_iter = task.train_data(jax.process_index(), jax.process_count())
  total_steps = run_length.total_steps(config, train_iter)
  check_schedule_length(config.optim, total_steps)
  logger.info("run length: %d steps of %d rows", total_steps, batch_plan.global_batch_size)

  model = task.build_model(config, sharding)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  del model
  optimizer, schedule = make_optimizer(config.optim, total_steps, params)
  shardings = train_state_shardings(params, optimizer, sharding)
  abstract = abstract_train_state(params, optimizer, shardings)

  checkpointer = Checkpointer(workdir_path / "checkpoints", max_to_keep=config.get("keep_checkpoints", 3),
                              asynchronous=config.get("async_checkpoints", True))
  state: Optional[TrainState] = None
  if checkpointer.latest_step() is not None:
    del params
    state, position, step = checkpointer.restore_newest_intact(
        abstract, config.get("resume_fallback", "previous"))
    train_iter.set_state(position)
    logger.info("resume: latest checkpoint of this run, step %d (%s)", step, checkpointer.directory)
  elif config.get("resume_from", ""):
    del params
    folder, step = find_checkpoint(config.resume_from)
    state, position, step = Checkpointer(folder, asynchronous=False).restore(abstract, step)
    train_iter.set_state(position)
    logger.info("resume: explicit checkpoint %s, step %d", folder, step)
  else:
    source = config.get("init_weights", "") or "random initialisation (seed %d)" % config.get("seed", 0)
    logger.info("resume: no checkpoint; starting at step 0 from %s", source)
    with jax.set_mesh(sharding.mesh):
      state = jax.jit(lambda p: init_state(p, optimizer), out_shardings=shardings)(params)
    del params
  start_step = int(jax.device_get(state.step))

  writer = MetricsWriter(workdir_path, enabled=is_main, tensorboard=config.get("tensorboard", True))
  writer.truncate_after(start_step)
  if is_main:
    writer.write_hparams(run_record.flat_hparams(resolved), json.dumps(resolved, indent=2, sort_keys=True))

  loss_fn = task.loss_fn()
  step_fn = make_train_step(graphdef, rest, loss_fn, optimizer, schedule, batch_plan.grad_accum_steps)
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  jitted_step = jax.jit(step_fn, in_shardings=(shardings, None, replicated),
                        out_shardings=(shardings, replicated), donate_argnums=(0,))
  rng = jax.random.key(config.get("seed", 0))

  eval_every = config.get("eval_every", 0)
  eval_fn = None
  # Built here to know whether there is held-out data at all; the first evaluation reads these
  # batches and later ones start a fresh pass.
  next_eval_data = task.eval_data(jax.process_index(), jax.process_count()) if eval_every else None
  if eval_every and next_eval_data is None:
    logger.warning("eval_every=%d but this task has no held-out data (set eval_data.dataset and "
                   "eval_data.path): no evaluation will run", eval_every)
  elif eval_every:
    eval_fn = jax.jit(make_eval_step(graphdef, rest, loss_fn), out_shardings=replicated)
  if config.get("export_from", "latest") == "best" and eval_fn is None:
    raise ValueError("export_from='best' but this run evaluates nothing: set eval_every > 0 and "
                     "eval_data.dataset / eval_data.path")
  best = (BestCheckpoint(workdir_path, keep_best_by, asynchronous=config.get("async_checkpoints", True))
          if eval_fn is not None and keep_best_by else None)

  def run_eval(step: int) -> dict[str, float]:
    nonlocal next_eval_data
    data = next_eval_data if next_eval_data is not None else task.eval_data(jax.process_index(),
                                                                            jax.process_count())
    next_eval_data = None
    sums = None
    for i, local in enumerate(data):
      if i >= config.get("eval_steps", 10 ** 9):
        break
      out = eval_fn(state.params, to_global_batch(local, sharding), jax.random.key(i))
      # One batch at a time: independent collective programs in flight together can take all of
      # a CPU mesh's device threads and wait on each other (see rloo.py); eval is not the hot path.
      out = jax.block_until_ready(out)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
      stats = getattr(data, "stats", None)
      raise DataError(f"the held-out data gave no batch ({stats.summary() if stats else 'no counts'}); "
                      f"check eval_data's seq_len, truncation and batch_size")
    metrics = finalize_eval(jax.device_get(sums))
    writer.write(step, metrics, split="eval")
    logger.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
    return metrics

  preemption = PreemptionFlag()
  log_every = max(1, config.get("log_every", 1))
  checkpoint_every = config.get("checkpoint_every", 0)
  progress = tqdm(total=total_steps, initial=start_step, disable=not is_main or not config.get("progress", True),
                  desc=config.get("name", "train"), dynamic_ncols=True)
  last: dict[str, float] = {}
  pending: Optional[tuple] = None  # metrics read one step late, so the host never stalls the device
  step = start_step
  tokens_trained = 0
  preempted = False

  def flush(pending_entry) -> dict[str, float]:
    done_step, device_metrics, started, num_tokens, extra = pending_entry
    metrics = _host_metrics(device_metrics)
    metrics.update(extra)
    _check_finite(done_step, metrics)
    elapsed = time.perf_counter() - started
    metrics["step_time_s"] = elapsed
    metrics["tokens_per_s"] = num_tokens / elapsed if elapsed > 0 else 0.0
    if done_step % log_every == 0 or done_step == total_steps:
      writer.write(done_step, metrics)
    progress.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
    return metrics

  try:
    with jax.set_mesh(sharding.mesh):
      while step < total_steps:
        local = next(train_iter)
        started = time.perf_counter()
        extra: dict[str, float] = {}
        batch, extra, num_tokens = task.prepare_batch(
            local, state, graphdef, rest, step, lambda x, whole=False: to_global_batch(x, sharding, whole))
        tokens_trained += num_tokens
        state, metrics = jitted_step(state, batch, rng)
        step += 1
        checkpointer.check_saved()  # a failed background save stops the run here
        if best is not None:
          best.check_saved()
        if pending is not None:
          last = flush(pending)
        pending = (step, metrics, started, num_tokens, extra)
        progress.update(1)
        # The last step is evaluated too: a run ends on a checkpoint the choice of best has seen.
        if eval_fn is not None and (step % eval_every == 0 or step == total_steps):
          last = flush(pending)
          pending = None
          eval_metrics = run_eval(step)
          if best is not None:
            best.offer(step, state.params, eval_metrics)
        want_save = (checkpoint_every and step % checkpoint_every == 0) or step == total_steps
        stop = preemption.is_set()
        if want_save or stop:
          if pending is not None:  # never checkpoint a state whose loss was not finite
            last = flush(pending)
            pending = None
          checkpointer.save(step, state, train_iter.get_state(), force=True)
        if stop:
          preempted = True
          logger.warning("preempted: checkpoint of step %d written; exiting", step)
          break
      if pending is not None:
        last = flush(pending)
      checkpointer.wait()  # the last save is on disk (or its failure raised) before the run ends
  finally:
    progress.close()
    checkpointer.close()
    if best is not None:
      best.close()
    writer.close()
    preemption.restore()
  return TrainResult(state=state, graphdef=graphdef, rest=rest, step=step, last_metrics=last,
                     preempted=preempted, total_steps=total_steps,
                     best_step=best.step if best is not None else None, tokens=tokens_trained)
