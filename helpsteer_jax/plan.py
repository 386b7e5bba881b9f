"""Ahead-of-time planner: will this train step fit this mesh, and how much work is it?

    python -m helpsteer_jax.plan --config=experiments/feedback_sft.py:size=70b --mesh=1,64,4 --devices=256 \
        --device_memory_gb=95

The train step is lowered and compiled for a mesh of fake CPU devices from ShapeDtypeStructs only
(no parameter is allocated), then XLA's buffer assignment gives the memory each device needs
(arguments + outputs - donated aliases + temporaries) and its cost analysis the FLOPs per device.
The CPU compiler's numbers approximate an accelerator's (its fusion and bf16 handling differ);
keep a margin of about 10%. The global batch's split (micro-batch x accumulation x data-parallel
shards) is derived from the mesh first, and a split that does not divide is refused before the
compile. With `--peak_tflops` it also prints the whole run's steps, tokens, FLOPs and hours.

Every 70B recipe at once, no compile (steps, tokens, FLOPs and hours on docs/70b.md's meshes):

    python -m helpsteer_jax.plan --recipes

The scaling search's memory plan (scaling/memory_plan.py): per role the weights and the KV cache
of one slot per device, the slots that fit and whether `pipelined` fits or `staged` is needed,
for a mesh and a memory size, or a named machine (`--accelerator`, which also gives the decode
hours of the run); `--accelerator=all` prints docs/70b.md's table:

    python -m helpsteer_jax.plan --search --config=experiments/scaling/grid.py --mesh=1,1,-1 \
        --devices=8 --hbm_gib=80
    python -m helpsteer_jax.plan --search --config=experiments/scaling/grid.py --accelerator=all

An RLOO config prints what RLOO holds per device (train/rloo_plan.py: policy state, gradients,
reference, reward model, rollout cache and slots) on a v5p-64 and on 4 x 8 H100, or on
--devices/--hbm_gib; `--rloo_compile` compiles its train step instead, as for any config:

    python -m helpsteer_jax.plan --config=experiments/edit_rloo.py:size=70b
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, cast


def _flag(name: str) -> str | None:
  for i, arg in enumerate(sys.argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(sys.argv):
      return sys.argv[i + 1]
  return None


def _recipes_only() -> bool:
  return "--recipes" in sys.argv or "--recipes=true" in sys.argv


def _fake_device_count() -> int:
  if "--search" in sys.argv or "--search=true" in sys.argv:
    return 1  # the search's plan is worked out, not compiled
  if "edit_rloo" in " ".join(sys.argv) and "--rloo_compile" not in sys.argv:
    return 1  # so is RLOO's (no --devices needed)
  if _recipes_only() or any(a in ("-h", "--help", "--helpshort", "--helpfull", "-?") for a in sys.argv[1:]):
    return 1  # help and the recipe table need no devices (and no --devices for a -1 mesh)
  mesh = [int(x) for x in (_flag("mesh") or "1,-1,1").split(",")]
  devices = _flag("devices")
  if devices is not None:
    return int(devices)
  if -1 in mesh:
    raise SystemExit("--mesh has a -1 entry: give --devices=N (the number of devices to plan for)")
  return math.prod(mesh)


def _use_fake_devices() -> None:
  """The fake devices must exist before jax starts its backend: called before any jax use."""
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_fake_device_count()}"
  ).strip()


import importlib.util
import pathlib

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from helpsteer_jax import entry_point  # noqa: E402
from helpsteer_jax.data.prompt_sources import load_prompts
from helpsteer_jax.train.batch_plan import global_batch_size, rows_per_step
from helpsteer_jax.train.recipe_cost import attention_flops_per_token, cost_table, model_flops_per_token, recipe_cost
from helpsteer_jax.train.run_length import planned_total_steps

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training experiment config.", lock_config=False)
flags.DEFINE_string("mesh", "1,-1,1", "Mesh shape over (data, fsdp, tensor); -1 = the rest.")
flags.DEFINE_integer("devices", None, "Number of devices to plan for (default: the mesh's product).")
flags.DEFINE_float("device_memory_gb", 0.0, "Memory per device to check the fit against (0 = no check).")
flags.DEFINE_float("peak_tflops", 0.0, "Peak bf16 TFLOP/s per device, for a step-time estimate at --mfu.")
flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation for the step-time estimate.")
flags.DEFINE_bool("recipes", False, "Print every 70B recipe's steps, tokens, FLOPs and hours; no compile.")
flags.DEFINE_string("experiments", "experiments", "Folder of experiment configs for --recipes.")
flags.DEFINE_bool("search", False, "Plan the memory of a scaling-search config (--config) instead of a train step.")
flags.DEFINE_float("hbm_gib", 0.0, "--search: memory per device in GiB (or give --accelerator).")
flags.DEFINE_string(
  "accelerator",
  "",
  "--search: a named machine (sets devices, memory and bandwidth), "
  "or 'all' for the table of every one; one of "
  + ", ".join(["8xH100-80GB", "8xH200", "v5p-8", "v5p-16", "v6e-8", "v5e-16"]),
)
flags.DEFINE_float("memory_fraction", 0.9, "--search: share of device memory for weights and caches.")
flags.DEFINE_string("preset", "llama3_70b", "--search: model shape of a checkpoint not on disk.")
flags.DEFINE_bool(
  "rloo_compile",
  False,
  "For an RLOO config, compile its train step as for any other config instead of printing its memory per device.",
)
flags.DEFINE_float("bandwidth_efficiency", 0.5, "--search: share of HBM bandwidth a decode step reaches.")
FLAGS = flags.FLAGS


def recipe_configs(folder: str, size: str = "70b") -> list:
  """`get_config("size=<size>")` of every experiment file in `folder` whose run length is known
  without its data (a recipe in steps, or in epochs with a published split size)."""
  configs = []
  for path in sorted(pathlib.Path(folder).glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file always has a source loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      continue
    config = module.get_config(f"size={size}")
    try:
      planned_total_steps(config, int(config.data.batch_size))
      global_batch_size(config)
    except ValueError as e:
      print(f"{path.name}: left out ({e})")
      continue
    configs.append(config)
  return configs


class PlanError(ValueError):
  """A plan that cannot be made as asked (printed as one line, with a way out)."""


def check_batch_split(batch_rows: int, mesh: dict[str, int]) -> None:
  """Rows of the global batch split over `data x fsdp`; fails with the dimension, the axes and a
  mesh of the same device count that would work."""
  split = mesh["data"] * mesh["fsdp"]
  if batch_rows % split == 0:
    return
  devices = math.prod(mesh.values())
  fsdp = math.gcd(batch_rows, devices)
  raise PlanError(
    f"the global batch of {batch_rows} rows does not split over the mesh axes data x fsdp = "
    f"{mesh['data']} x {mesh['fsdp']} = {split}; on {devices} devices use e.g. "
    f"--mesh=1,{fsdp},{devices // fsdp} (the rest on tensor), or a batch size that is a "
    f"multiple of {split}"
  )


def plan(config, mesh_shape: tuple[int, ...]) -> dict:
  import jax
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec

  from helpsteer_jax.train.loop import batch_plan_from_config, batch_sharding, sharding_from_config
  from helpsteer_jax.train.model_setup import model_config
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.state import abstract_train_state, train_state_shardings
  from helpsteer_jax.train.step import make_train_step
  from helpsteer_jax.train.tasks import make_task

  config.mesh.shape = mesh_shape
  sharding = sharding_from_config(config)
  check_batch_split(rows_per_step(config), dict(sharding.mesh.shape))
  try:
    split = batch_plan_from_config(config, sharding)  # refuses a micro-batch that does not divide
  except ValueError as e:
    raise PlanError(str(e)) from None
  task = make_task(config)
  abstract_model = task.abstract_model(sharding)
  # Two filters give exactly (graphdef, params, rest); split's own type allows any number of states.
  graphdef, params, rest = cast(tuple[Any, Any, Any], nnx.split(abstract_model, nnx.Param, ...))
  optimizer, schedule = make_optimizer(config.optim, int(config.total_steps), params)
  shardings = train_state_shardings(params, optimizer, sharding)
  state = abstract_train_state(params, optimizer, shardings)
  batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding(sharding, len(v.shape)))
    for k, v in task.batch_spec().items()
  }
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  step = make_train_step(graphdef, rest, task.loss_fn(), optimizer, schedule, split.grad_accum_steps)
  with jax.set_mesh(sharding.mesh):
    lowered = jax.jit(
      step, in_shardings=(shardings, None, replicated), out_shardings=(shardings, replicated), donate_argnums=(0,)
    ).lower(state, batch, rng)
    compiled = lowered.compile()
  memory = compiled.memory_analysis()
  if memory is None:
    raise RuntimeError("the XLA backend reports no memory analysis of the compiled train step")
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  per_device = (
    memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes + memory.temp_size_in_bytes
  )
  mc = model_config(config)
  tokens = int(config.data.batch_size) * int(config.data.seq_len)
  model_flops = tokens * (model_flops_per_token(mc) + attention_flops_per_token(mc, int(config.data.seq_len)))
  return {
    "batch_plan": split.describe(),
    "mesh": dict(sharding.mesh.shape),
    "devices": sharding.mesh.size,
    "params": sum(int(math.prod(x.shape)) for x in jax.tree.leaves(params)),
    "tokens_per_step": tokens,
    "bytes_per_device": per_device,
    "arguments_bytes": memory.argument_size_in_bytes,
    "temp_bytes": memory.temp_size_in_bytes,
    "compiled_flops_per_device": float(cost.get("flops", float("nan"))) if cost else float("nan"),
    "model_flops_per_step": model_flops,
  }


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.recipes:
    print(f"Every 70B recipe (hours at {FLAGS.mfu:.0%} MFU of the devices' peak bf16 FLOP/s):")
    print(cost_table(recipe_configs(FLAGS.experiments), mfu=FLAGS.mfu))
    return
  if _CONFIG.value is None:
    raise app.UsageError("give --config (or --recipes)")
  if FLAGS.search:
    print("\n".join(search_plan_lines(_CONFIG.value)))
    return
  if "rloo" in _CONFIG.value and not FLAGS.rloo_compile:
    print("\n".join(rloo_plan_lines(_CONFIG.value)))
    return
  config = _CONFIG.value
  config.progress = False
  mesh_shape = tuple(int(x) for x in FLAGS.mesh.split(","))
  try:
    result = plan(config, mesh_shape)
  except PlanError as e:
    raise SystemExit(f"error: {e}") from None
  gib = 1024**3
  lines = [
    f"config: {config.get('name', '?')}  mesh {result['mesh']} ({result['devices']} devices)",
    result["batch_plan"],
    f"parameters: {result['params'] / 1e9:.2f} B; tokens per step: {result['tokens_per_step']:,}",
    f"memory per device: {result['bytes_per_device'] / gib:.2f} GiB "
    f"(state and batch {result['arguments_bytes'] / gib:.2f} GiB, temporaries {result['temp_bytes'] / gib:.2f} GiB)",
    f"FLOPs per step: {result['model_flops_per_step']:.3e} (model: 6N + attention per token); "
    f"XLA cost analysis per device {result['compiled_flops_per_device']:.3e} (loop bodies counted once)",
  ]
  if FLAGS.device_memory_gb:
    fits = result["bytes_per_device"] <= FLAGS.device_memory_gb * 1e9
    lines.append(f"fits in {FLAGS.device_memory_gb:g} GB per device: {'yes' if fits else 'NO'}")
  if FLAGS.peak_tflops:
    seconds = result["model_flops_per_step"] / (result["devices"] * FLAGS.peak_tflops * 1e12 * FLAGS.mfu)
    lines.append(f"step time at {FLAGS.mfu:.0%} MFU of {FLAGS.peak_tflops:g} TFLOP/s: {seconds:.2f} s")
    try:
      cost = recipe_cost(config)
      lines.append(
        f"run: {cost.steps:,} steps, {cost.tokens / 1e9:.2f} B tokens, {cost.flops:.3e} FLOPs, "
        f"{cost.hours(result['devices'], FLAGS.peak_tflops, FLAGS.mfu):.1f} h"
      )
    except ValueError as e:  # e.g. epochs over data of unknown size
      lines.append(f"run: length unknown without the data ({e})")
  print("\n".join(lines))


def search_plan_lines(config) -> list[str]:
  """The --search output: one machine's plan, or the table over every named machine."""
  from helpsteer_jax.parallel.device_memory import ACCELERATORS, GIB
  from helpsteer_jax.scaling.memory_plan import decode_hours
  from helpsteer_jax.scaling.search_plan import paper_stage_tokens, plan_shapes, prompt_lengths, role_shapes

  shapes = role_shapes(config, FLAGS.preset)
  lengths = prompt_lengths(config, shapes)
  prompts = _num_prompts(config)
  assumptions = (
    f"decode hours for {prompts} prompts: drafts and edits ~600 tokens, feedback ~150; "
    f"{FLAGS.bandwidth_efficiency:.0%} of HBM bandwidth; prefill, selection and loading left out"
  )
  if FLAGS.accelerator == "all":
    rows = [
      "| machine | devices (hosts) | mesh | schedule | slots per stage | decode hours |",
      "|---|---|---|---|---|---|",
    ]
    for acc in ACCELERATORS.values():
      plan, _, axes = plan_shapes(config, shapes, lengths, acc.devices, acc.hbm_gib * GIB, FLAGS.memory_fraction)
      slots = ", ".join(f"{r.stage} {plan.slots(r)}" for r in plan.roles if r.stage != "select")
      hours = (
        "-"
        if plan.schedule == "neither"
        else f"{decode_hours(plan, paper_stage_tokens(config, lengths), prompts, acc.hbm_tb_s, FLAGS.bandwidth_efficiency, axes[0]):.1f}"
      )
      rows.append(
        f"| {acc.name} | {acc.devices} ({acc.hosts}) | {axes} | {plan.schedule} | "
        f"{slots if plan.schedule != 'neither' else '-'} | {hours} |"
      )
    return rows + ["", f"longest requests: {lengths.longest}; {assumptions}"]
  if FLAGS.accelerator:
    if FLAGS.accelerator not in ACCELERATORS:
      raise app.UsageError(f"--accelerator={FLAGS.accelerator!r}; expected all or one of {sorted(ACCELERATORS)}")
    acc = ACCELERATORS[FLAGS.accelerator]
    devices, hbm, bandwidth = acc.devices, acc.hbm_gib * GIB, acc.hbm_tb_s
  else:
    if not FLAGS.hbm_gib:
      raise app.UsageError("--search needs --hbm_gib (memory per device) or --accelerator")
    devices, hbm, bandwidth = _fake_device_count_for_search(), FLAGS.hbm_gib * GIB, 0.0
  config.mesh.shape = tuple(int(x) for x in FLAGS.mesh.split(","))
  plan, _, axes = plan_shapes(config, shapes, lengths, devices, hbm, FLAGS.memory_fraction)
  lines = [
    f"config: {config.output_dir}  mesh (data, fsdp, tensor) {axes} on {devices} devices of {hbm / GIB:.1f} GiB",
    *plan.lines(),
  ]
  if bandwidth and plan.schedule != "neither":
    decode = decode_hours(
      plan, paper_stage_tokens(config, lengths), prompts, bandwidth, FLAGS.bandwidth_efficiency, axes[0]
    )
    lines.append(f"{assumptions}: {decode:.1f} h")
  return lines


def rloo_plan_lines(config) -> list[str]:
  """An RLOO config's memory per device (train/rloo_plan.py) on each training cluster, or on
  --accelerator / --devices with --hbm_gib."""
  from helpsteer_jax.parallel.device_memory import GIB, TRAINING_CLUSTERS
  from helpsteer_jax.train.rloo_plan import plan_rloo

  if FLAGS.hbm_gib:
    machines = [("given", _fake_device_count_for_search(), FLAGS.hbm_gib * GIB)]
    config.mesh.shape = tuple(int(x) for x in FLAGS.mesh.split(","))
  else:
    machines = [(m.name, m.devices, m.hbm_gib * GIB) for m in TRAINING_CLUSTERS.values()]
  lines = [
    f"RLOO memory per device (rollouts of up to {config.rloo.max_new_tokens} new tokens; prompts "
    f"{'cut at ' + str(config.rloo.max_prompt_tokens) if config.rloo.max_prompt_tokens > 0 else 'of 3072 tokens assumed'}):"
  ]
  for name, devices, hbm in machines:
    plan = plan_rloo(config, devices, hbm, FLAGS.memory_fraction)
    lines += [f"{name}:"] + ["  " + line for line in plan.lines()]
  return lines


def _fake_device_count_for_search() -> int:
  mesh = [int(x) for x in FLAGS.mesh.split(",")]
  if FLAGS.devices:
    return FLAGS.devices
  if -1 in mesh:
    raise app.UsageError("--mesh has a -1 entry: give --devices=N (the number of devices to plan for)")
  return math.prod(mesh)


def _num_prompts(config) -> int:
  return len(load_prompts(config.prompts.source, config.prompts.path, config.prompts.limit, config.prompts.start))


def run() -> None:
  _use_fake_devices()
  entry_point.run(main)


if __name__ == "__main__":
  run()
