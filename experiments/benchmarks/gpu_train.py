"""Training MFU on the device: SFT steps of a ~1.5B- and an 8B-shaped Llama, bf16, cuDNN attention.

    python experiments/benchmarks/gpu_train.py --out DIR [--tiny]

The step is the trainers' own (`train/step.py`, `train/sft.py` with the loss fused over chunks of
1024 tokens as the 8b recipe runs it, AdamW from `train/optimizer.py`) on one device. Parameters
and AdamW moments are bf16: with the recipes' fp32 master weights an 8B model's train state alone
(16 bytes a parameter) would not fit one 141 GB device. With one micro-batch the step adds its
gradients to no fp32 accumulator (`make_train_step`), and the session raises JAX's memory fraction
(`XLA_PYTHON_CLIENT_MEM_FRACTION`). Remat is the recipes' policy (`full` at 8b and 70b, checked by
the planner), and for the smaller model also the policy that saves the projections and the
attention's outputs. Compile time (lowering and XLA) is timed apart from the steady state; MFU
counts 6 N per token plus causal attention (`train/recipe_cost.py`) against the dense bf16 peak.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
from gpu_common import Report, best_time, device, llama8b_shape, parse_args, seconds_of


def main() -> None:
  args = parse_args(__doc__)
  import jax
  import jax.numpy as jnp
  import ml_collections
  from flax import nnx

  from helpsteer_jax.models.create import count_params, create_sharded_model
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.recipe_cost import attention_flops_per_token, model_flops_per_token
  from helpsteer_jax.train.sft import sft_loss
  from helpsteer_jax.train.state import init_state
  from helpsteer_jax.train.step import make_train_step

  dev = device()
  report = Report(args.out, "train", f"Training MFU ({dev.describe})")
  large = llama8b_shape(args.tiny, attention_impl="cudnn")
  small = (
    large.replace(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64)
    if not args.tiny
    else large.replace(num_layers=1)
  )
  batch, seq_len, chunk = (2, 128, 64) if args.tiny else (8, 2048, 1024)
  cases = [(small, "dots_no_batch_attention"), (small, "full"), (large, "full")]
  optim = ml_collections.ConfigDict(
    dict(
      learning_rate=1e-5,
      warmup_steps=0,
      schedule="constant",
      final_lr_fraction=1.0,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.01,
      grad_clip_norm=1.0,
    )
  )
  peak = dev.peak_bf16
  report.add(
    f"{batch} x {seq_len} tokens a step, one micro-batch, bf16 parameters and moments; "
    f"peak {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown (no MFU)'}.",
    "",
    "| model | remat | compile s | step s | tokens/s | model TFLOP/s | MFU | loss first -> last |",
    "|---|---|---:|---:|---:|---:|---:|---|",
  )
  ids = np.random.default_rng(0).integers(100, large.vocab_size, size=(batch, seq_len + 1))
  data = {
    "input_ids": jnp.asarray(ids[:, :-1], jnp.int32),
    "targets": jnp.asarray(ids[:, 1:], jnp.int32),
    "loss_weights": jnp.ones((batch, seq_len), jnp.float32),
    # No packed segments: one segment per row keeps the cuDNN kernel (models/attention_kernels.py).
    "segment_ids": None,
    "positions": jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch, seq_len)),
  }

  def measure(config, remat):
    config = config.replace(remat_policy=remat)
    model = create_sharded_model(config, None, seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer, schedule = make_optimizer(optim, 1000, params)
    holder = {"state": init_state(params, optimizer)}
    del model, params
    step = jax.jit(
      make_train_step(graphdef, rest, functools.partial(sft_loss, chunk=chunk), optimizer, schedule),
      donate_argnums=(0,),
    )
    key = jax.random.key(0)
    compiled = {}
    compile_seconds = seconds_of(lambda: compiled.setdefault("step", step.lower(holder["state"], data, key).compile()))
    losses = []

    def run():
      holder["state"], metrics = compiled["step"](holder["state"], data, key)
      losses.append(float(metrics["loss"]))

    run()  # first call: buffers placed, autotuning settled
    seconds = best_time(run, 3)
    tokens = batch * seq_len
    flops = (model_flops_per_token(config) + attention_flops_per_token(config, seq_len)) * tokens
    mfu = f"{flops / seconds / peak:.1%}" if peak else "-"
    attention = "" if config.attention_impl == "cudnn" else f", {config.attention_impl} attention"
    report.add(
      f"| {count_params(config) / 1e9:.2f}B | {remat}{attention} | {compile_seconds:.1f} | {seconds:.3f} | "
      f"{tokens / seconds:,.0f} | {flops / seconds / 1e12:.1f} | {mfu} | {losses[0]:.3f} -> {losses[-1]:.3f} |"
    )
    del holder["state"], compiled["step"]

  for config, remat in cases:
    if not report.guarded(f"{config.num_layers} layers | {remat}", lambda: measure(config, remat)):
      # Where the kernel fails, the same step with the XLA attention still gives a figure.
      xla = config.replace(attention_impl="xla")
      report.guarded(f"{config.num_layers} layers | {remat}, XLA attention", lambda: measure(xla, remat))


if __name__ == "__main__":
  sys.exit(main())
