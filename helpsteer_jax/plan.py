"""Ahead-of-time planner: will this train step fit this mesh, and how much work is it?

    python -m helpsteer_jax.plan --config=experiments/feedback_sft.py:size=70b --mesh=1,-1,1 --devices=256 \
        --device_memory_gb=95

The train step is lowered and compiled for a mesh of fake CPU devices from ShapeDtypeStructs only
(no parameter is allocated), then XLA's buffer assignment gives the memory each device needs
(arguments + outputs - donated aliases + temporaries) and its cost analysis the FLOPs per device.
The CPU compiler's numbers approximate an accelerator's (its fusion and bf16 handling differ);
keep a margin of about 10%.
"""

from __future__ import annotations

import math
import os
import sys


def _flag(name: str) -> str | None:
  for i, arg in enumerate(sys.argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(sys.argv):
      return sys.argv[i + 1]
  return None


def _fake_device_count() -> int:
  if any(a in ("-h", "--help", "--helpshort", "--helpfull", "-?") for a in sys.argv[1:]):
    return 1  # help needs no devices (and no --devices for a -1 mesh)
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
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_fake_device_count()}").strip()


from absl import app, flags  # noqa: E402
from helpsteer_jax import entry_point  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training experiment config.", lock_config=False)
flags.DEFINE_string("mesh", "1,-1,1", "Mesh shape over (data, fsdp, tensor); -1 = the rest.")
flags.DEFINE_integer("devices", None, "Number of devices to plan for (default: the mesh's product).")
flags.DEFINE_float("device_memory_gb", 0.0, "Memory per device to check the fit against (0 = no check).")
flags.DEFINE_float("peak_tflops", 0.0, "Peak bf16 TFLOP/s per device, for a step-time estimate at --mfu.")
flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation for the step-time estimate.")
FLAGS = flags.FLAGS


def model_flops_per_token(config) -> float:
  """Training FLOPs per token: 6 x matmul parameters + attention (12 x L x T x D per token, causal
  halved), the usual MFU convention."""
  from helpsteer_jax.models.create import count_params

  params = count_params(config)
  embed = config.vocab_size * config.hidden_size  # the input embedding is a gather, not a matmul
  if not config.tie_word_embeddings:
    params -= embed
  return 6.0 * params


def attention_flops_per_token(config, seq_len: int) -> float:
  return 6.0 * config.num_layers * seq_len * config.num_heads * config.head_dim  # 12 L T N H / 2 (causal)


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
      f"data.batch_size={batch_rows} rows do not split over the mesh axes data x fsdp = "
      f"{mesh['data']} x {mesh['fsdp']} = {split}; on {devices} devices use e.g. "
      f"--mesh=1,{fsdp},{devices // fsdp} (the rest on tensor), or a batch size that is a "
      f"multiple of {split}")


def plan(config, mesh_shape: tuple[int, ...]) -> dict:
  import jax
  from flax import nnx

  from helpsteer_jax.train.loop import batch_sharding, sharding_from_config
  from helpsteer_jax.train.model_setup import model_config
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.state import abstract_train_state, train_state_shardings
  from helpsteer_jax.train.step import make_train_step
  from helpsteer_jax.train.tasks import make_task
  from jax.sharding import NamedSharding, PartitionSpec

  config.mesh.shape = mesh_shape
  sharding = sharding_from_config(config)
  check_batch_split(int(config.data.batch_size), dict(sharding.mesh.shape))
  task = make_task(config)
  abstract_model = task.abstract_model(sharding)
  graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)
  optimizer, schedule = make_optimizer(config.optim, int(config.total_steps), params)
  shardings = train_state_shardings(params, optimizer, sharding)
  state = abstract_train_state(params, optimizer, shardings)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding(sharding, len(v.shape)))
           for k, v in task.batch_spec().items()}
  replicated = NamedSharding(sharding.mesh, PartitionSpec())
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  step = make_train_step(graphdef, rest, task.loss_fn(), optimizer, schedule, config.get("grad_accum_steps", 1))
  with jax.set_mesh(sharding.mesh):
    lowered = jax.jit(step, in_shardings=(shardings, None, replicated), out_shardings=(shardings, replicated),
                      donate_argnums=(0,)).lower(state, batch, rng)
    compiled = lowered.compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  per_device = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  mc = model_config(config)
  tokens = int(config.data.batch_size) * int(config.data.seq_len)
  model_flops = tokens * (model_flops_per_token(mc) + attention_flops_per_token(mc, int(config.data.seq_len)))
  return {
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
  config = _CONFIG.value
  config.progress = False
  mesh_shape = tuple(int(x) for x in FLAGS.mesh.split(","))
  try:
    result = plan(config, mesh_shape)
  except PlanError as e:
    raise SystemExit(f"error: {e}") from None
  gib = 1024 ** 3
  lines = [
      f"config: {config.get('name', '?')}  mesh {result['mesh']} ({result['devices']} devices)",
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
  print("\n".join(lines))


def run() -> None:
  _use_fake_devices()
  flags.mark_flags_as_required(["config"])
  entry_point.run(main)


if __name__ == "__main__":
  run()
