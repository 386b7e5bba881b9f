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
from typing import Any, Optional, Protocol, cast

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
  """What a trainer (SFT, reward model, RLOO) provides to the shared loop, to the memory plan
  (`plan.py`: `abstract_model`, `batch_spec`) and to the export (`tasks.py`). `TaskBase` gives the
  defaults of `train_data`, `eval_data`, `prepare_batch` and `num_tokens`."""

  def abstract_model(self, sharding: Optional[ShardingContext]) -> nnx.Module:
    """The model's shapes, dtypes and shardings with no weights allocated (`nnx.eval_shape`)."""
    ...

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch one step takes, as shapes and dtypes (the plan compiles the step on it)."""
    ...

  def export(self, model: nnx.Module, out_dir: str) -> None:
    """Writes the trained model as an HF folder that transformers and vLLM load."""
    ...

  def build_model(self, config: ml_collections.ConfigDict, sharding: ShardingContext) -> nnx.Module:
    """The model with `config.init_weights` loaded, or randomly initialised; already sharded."""
    ...

  def loss_fn(self) -> LossFn: ...

  def train_data(self, process_index: int, process_count: int) -> ResumableIterator: ...

  def eval_data(self, process_index: int, process_count: int) -> Optional[Iterator[dict[str, np.ndarray]]]: ...

  def prepare_batch(
    self,
    local: Any,
    state: TrainState,
    graphdef: Any,
    rest: Any,
    step: int,
    to_global: Callable[..., dict[str, jax.Array]],
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


def to_global_batch(
  local: dict[str, np.ndarray], sharding: ShardingContext, whole: bool = False
) -> dict[str, jax.Array]:
  """Each process's rows -> one global array per entry, rows split over (data, fsdp). With `whole`
  every process holds the whole global batch (RLOO's rollouts, sampled SPMD by every process) and
  each device takes its own rows of it."""
  if whole:
    return {
      k: jax.make_array_from_callback(v.shape, batch_sharding(sharding, v.ndim), v.__getitem__)
      for k, v in local.items()
    }
  return {k: jax.make_array_from_process_local_data(batch_sharding(sharding, v.ndim), v) for k, v in local.items()}


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
    raise NonFiniteLossError(
      f"step {step}: non-finite {bad}; stopping (the last checkpoint is "
      "intact; lower the learning rate or check the data of this step)"
    )


def batch_plan_from_config(config: ml_collections.ConfigDict, sharding: ShardingContext) -> BatchPlan:
  """The global batch's split over this mesh (raises before any compile if it does not divide)."""
  return plan_batch(config, data_parallel_size(sharding))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainResult:
  """Trains `task` in `workdir`, resuming what is there; process 0 first checks the workdir
  writable and holds it for the run (`data/run_folder.py`), so a second run on it fails at once.
  Values no run can train with fail before that."""
  check_optim_config(config.optim)
  with claim_run_folder(workdir, what=f"training run {config.name!r}", enabled=jax.process_index() == 0):
    run, params = _set_up(config, workdir, task)
    checkpointer = Checkpointer(
      run.workdir / "checkpoints", max_to_keep=config.keep_checkpoints, asynchronous=config.async_checkpoints
    )
    state = _restore_or_init(run, params, checkpointer)
    del params
    return _train(run, task, state, checkpointer)


@dataclasses.dataclass
class _Run:
  """What the loop needs once set up: where it writes, the mesh and batch split, the data and
  its length, the model's split graph and the optimizer over the state's shardings."""

  config: ml_collections.ConfigDict
  workdir: Any  # epath.Path, local or gs://
  is_main: bool
  sharding: ShardingContext
  batch_plan: BatchPlan
  train_iter: ResumableIterator
  total_steps: int
  graphdef: Any
  rest: Any
  optimizer: Any
  schedule: Any
  shardings: Any
  abstract: Any
  resolved: Optional[dict[str, Any]]  # the resolved config (process 0)


def _set_up(config: ml_collections.ConfigDict, workdir: str, task: Task) -> tuple[_Run, Any]:
  """Everything before the train state, in the order that fails cheapest first: the batch split,
  the workdir's record of what produced it, the data and run length, then the model."""
  workdir_path = storage.as_path(storage.absolute(workdir))
  is_main = jax.process_index() == 0
  check_settings(config.keep_best_by, config.export_from)
  sharding = sharding_from_config(config)
  logger.info(
    "mesh %s over %d devices (%d processes)", dict(sharding.mesh.shape), jax.device_count(), jax.process_count()
  )
  batch_plan = batch_plan_from_config(config, sharding)
  logger.info("%s", batch_plan.describe())
  if is_main:
    workdir_path.mkdir(parents=True, exist_ok=True)
  # Every process checks (so all refuse together); process 0 records, then writes config.json.
  run_record.check_workdir(config, workdir_path, has_work=has_checkpoint(workdir_path / "checkpoints"), write=is_main)
  resolved = run_record.record_config(config, workdir_path) if is_main else None

  train_iter = task.train_data(jax.process_index(), jax.process_count())
  total_steps = run_length.total_steps(config, train_iter)
  check_schedule_length(config.optim, total_steps)
  logger.info("run length: %d steps of %d rows", total_steps, batch_plan.global_batch_size)

  model = task.build_model(config, sharding)
  # Two filters give exactly (graphdef, params, rest); split's own type allows any number of states.
  graphdef, params, rest = cast(tuple[Any, Any, Any], nnx.split(model, nnx.Param, ...))
  del model
  optimizer, schedule = make_optimizer(config.optim, total_steps, params)
  shardings = train_state_shardings(params, optimizer, sharding)
  abstract = abstract_train_state(params, optimizer, shardings)
  return _Run(
    config,
    workdir_path,
    is_main,
    sharding,
    batch_plan,
    train_iter,
    total_steps,
    graphdef,
    rest,
    optimizer,
    schedule,
    shardings,
    abstract,
    resolved,
  ), params


def _restore_or_init(run: _Run, params: Any, checkpointer: Checkpointer) -> TrainState:
  """The state to start from: this run's newest intact checkpoint, else `resume_from`'s, else a
  fresh state over the built model's parameters. The data position travels with a checkpoint."""
  config = run.config
  if checkpointer.latest_step() is not None:
    state, position, step = checkpointer.restore_newest_intact(run.abstract, config.resume_fallback)
    run.train_iter.set_state(position)
    logger.info("resume: latest checkpoint of this run, step %d (%s)", step, checkpointer.directory)
    return state
  if config.resume_from:
    folder, folder_step = find_checkpoint(config.resume_from)  # None: the folder's latest step
    state, position, step = Checkpointer(folder, asynchronous=False).restore(run.abstract, folder_step)
    run.train_iter.set_state(position)
    logger.info("resume: explicit checkpoint %s, step %d", folder, step)
    return state
  source = config.init_weights or f"random initialisation (seed {config.seed})"
  logger.info("resume: no checkpoint; starting at step 0 from %s", source)
  with jax.set_mesh(run.sharding.mesh):
    return jax.jit(lambda p: init_state(p, run.optimizer), out_shardings=run.shardings)(params)


class _HeldOut:
  """The held-out evaluation of a run: its jitted step, its data (the first pass reads the
  batches built at start-up, later ones a fresh pass) and the best checkpoint it feeds."""

  def __init__(self, run: _Run, task: Task, loss_fn: LossFn, writer: MetricsWriter):
    config = run.config
    self.run, self.task, self.writer = run, task, writer
    self.every = config.eval_every
    # Built now to know whether there is held-out data at all.
    self.next_data = task.eval_data(jax.process_index(), jax.process_count()) if self.every else None
    self.fn: Optional[Callable[..., Any]] = None
    if self.every and self.next_data is None:
      logger.warning(
        "eval_every=%d but this task has no held-out data (set eval_data.dataset and "
        "eval_data.path): no evaluation will run",
        self.every,
      )
    elif self.every:
      replicated = NamedSharding(run.sharding.mesh, PartitionSpec())
      self.fn = jax.jit(make_eval_step(run.graphdef, run.rest, loss_fn), out_shardings=replicated)
    if config.export_from == "best" and self.fn is None:
      raise ValueError(
        "export_from='best' but this run evaluates nothing: set eval_every > 0 and eval_data.dataset / eval_data.path"
      )
    self.best = (
      BestCheckpoint(run.workdir, config.keep_best_by, asynchronous=config.async_checkpoints)
      if self.fn is not None and config.keep_best_by
      else None
    )

  def due(self, step: int) -> bool:
    # The last step is evaluated too: a run ends on a checkpoint the choice of best has seen.
    return self.fn is not None and (step % self.every == 0 or step == self.run.total_steps)

  def __call__(self, step: int, params: Any) -> None:
    data = (
      self.next_data if self.next_data is not None else self.task.eval_data(jax.process_index(), jax.process_count())
    )
    self.next_data = None
    # Called only when `due`: there is an eval step, and the task's held-out data it was built for.
    assert self.fn is not None and data is not None
    sums = None
    for i, local in enumerate(data):
      if i >= self.run.config.eval_steps:
        break
      out = self.fn(params, to_global_batch(local, self.run.sharding), jax.random.key(i))
      # One batch at a time: independent collective programs in flight together can take all of
      # a CPU mesh's device threads and wait on each other (see rloo.py); eval is not the hot path.
      out = jax.block_until_ready(out)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
      stats = getattr(data, "stats", None)
      raise DataError(
        f"the held-out data gave no batch ({stats.summary() if stats else 'no counts'}); "
        f"check eval_data's seq_len, truncation and batch_size"
      )
    metrics = finalize_eval(jax.device_get(sums))
    self.writer.write(step, metrics, split="eval")
    logger.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
    if self.best is not None:
      self.best.offer(step, params, metrics)


class _StepLog:
  """Each step's metrics, read from the device one step late so the host never stalls it:
  checked finite, timed, written every `log_every` steps and shown on the progress bar."""

  def __init__(self, run: _Run, writer: MetricsWriter, progress: Any):
    self.writer, self.progress, self.total_steps = writer, progress, run.total_steps
    self.log_every = max(1, run.config.log_every)
    self.pending: Optional[tuple] = None
    self.last: dict[str, float] = {}

  def add(self, step: int, device_metrics: Any, started: float, num_tokens: int, extra: dict[str, float]) -> None:
    self.flush()
    self.pending = (step, device_metrics, started, num_tokens, extra)

  def flush(self) -> None:
    if self.pending is None:
      return
    done_step, device_metrics, started, num_tokens, extra = self.pending
    self.pending = None
    metrics = _host_metrics(device_metrics)
    metrics.update(extra)
    _check_finite(done_step, metrics)
    elapsed = time.perf_counter() - started
    metrics["step_time_s"] = elapsed
    metrics["tokens_per_s"] = num_tokens / elapsed if elapsed > 0 else 0.0
    if done_step % self.log_every == 0 or done_step == self.total_steps:
      self.writer.write(done_step, metrics)
    self.progress.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
    self.last = metrics


def _train(run: _Run, task: Task, state: TrainState, checkpointer: Checkpointer) -> TrainResult:
  """The steps from the restored one to `total_steps`: each step checked, logged, evaluated and
  checkpointed on schedule; SIGTERM saves and stops."""
  config, start_step = run.config, int(jax.device_get(state.step))
  writer = MetricsWriter(run.workdir, enabled=run.is_main, tensorboard=config.tensorboard)
  writer.truncate_after(start_step)
  if run.is_main and run.resolved is not None:  # process 0 holds the resolved config
    writer.write_hparams(run_record.flat_hparams(run.resolved), json.dumps(run.resolved, indent=2, sort_keys=True))
  loss_fn = task.loss_fn()
  replicated = NamedSharding(run.sharding.mesh, PartitionSpec())
  jitted_step = jax.jit(
    make_train_step(run.graphdef, run.rest, loss_fn, run.optimizer, run.schedule, run.batch_plan.grad_accum_steps),
    in_shardings=(run.shardings, None, replicated),
    out_shardings=(run.shardings, replicated),
    donate_argnums=(0,),
  )
  rng = jax.random.key(config.seed)
  held_out = _HeldOut(run, task, loss_fn, writer)
  preemption = PreemptionFlag()
  progress = tqdm(
    total=run.total_steps,
    initial=start_step,
    disable=not run.is_main or not config.progress,
    desc=config.name,
    dynamic_ncols=True,
  )
  log = _StepLog(run, writer, progress)
  step, tokens_trained, preempted = start_step, 0, False
  to_global = lambda x, whole=False: to_global_batch(x, run.sharding, whole)  # noqa: E731
  try:
    with jax.set_mesh(run.sharding.mesh):
      while step < run.total_steps:
        local = next(run.train_iter)
        started = time.perf_counter()
        batch, extra, num_tokens = task.prepare_batch(local, state, run.graphdef, run.rest, step, to_global)
        tokens_trained += num_tokens
        state, metrics = jitted_step(state, batch, rng)
        step += 1
        checkpointer.check_saved()  # a failed background save stops the run here
        if held_out.best is not None:
          held_out.best.check_saved()
        log.add(step, metrics, started, num_tokens, extra)
        progress.update(1)
        if held_out.due(step):
          log.flush()
          held_out(step, state.params)
        preempted = preemption.is_set()
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == run.total_steps or preempted:
          log.flush()  # never checkpoint a state whose loss was not finite
          checkpointer.save(step, state, run.train_iter.get_state(), force=True)
        if preempted:
          logger.warning("preempted: checkpoint of step %d written; exiting", step)
          break
      log.flush()
      checkpointer.wait()  # the last save is on disk (or its failure raised) before the run ends
  finally:
    progress.close()
    checkpointer.close()
    if held_out.best is not None:
      held_out.best.close()
    writer.close()
    preemption.restore()
  return TrainResult(
    state=state,
    graphdef=run.graphdef,
    rest=run.rest,
    step=step,
    last_metrics=log.last,
    preempted=preempted,
    total_steps=run.total_steps,
    best_step=held_out.best.step if held_out.best is not None else None,
    tokens=tokens_trained,
  )
