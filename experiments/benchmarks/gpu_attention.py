"""cuDNN attention against the project's XLA attention, on the device.

    python experiments/benchmarks/gpu_attention.py --out DIR [--tiny]

  1. The attention alone at B4, T2048, 32 heads, 8 KV heads, head dims 128 and 64, with ragged
     key lengths (right padding), bf16: outputs and the gradients of q, k and v, each against an
     fp32 XLA reference, and the time of a forward and of a forward with its backward.
  2. Whole-model logits of a Llama-3-8B-wide, 4-layer model (random weights) with
     `attention_impl=cudnn` and `xla`: their difference, top-1 agreement and forward times.
Where the backend has no cuDNN (the `--tiny` rehearsal on CPU) the kernel call runs
`jax.nn.dot_product_attention`'s XLA implementation: the same call, layouts and lengths.
"""

from __future__ import annotations

import sys

import numpy as np
from gpu_common import Report, best_time, device, llama8b_shape, parse_args


def main() -> None:
  args = parse_args(__doc__)
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from helpsteer_jax.models.attention_kernels import kernel_attention, resolve
  from helpsteer_jax.models.create import abstract_model, create_sharded_model
  from helpsteer_jax.models.layers import grouped_query_attention

  dev = device()
  kernel = resolve("cudnn")
  kernel = kernel if kernel == "cudnn" else "xla_dot_product"
  report = Report(args.out, "attention", f"cuDNN against XLA attention ({dev.describe}; kernel call: {kernel})")
  b, t, n, k = (4, 128, 4, 2) if args.tiny else (4, 2048, 32, 8)
  lengths = jnp.asarray([t, t * 3 // 4, t // 2 - 3, t // 8 + 1], jnp.int32)
  real = jnp.arange(t)[None, :] < lengths[:, None]  # [B, T]
  repeats = 3 if args.tiny else 10

  # The lengths reach each program as an argument: built from constants inside it, the [B, T, T]
  # mask would be constant-folded by XLA at compile time (minutes at T=2048).
  def xla(q, kk, v, lengths):
    real = jnp.arange(t)[None, :] < lengths[:, None]
    mask = jnp.tril(jnp.ones((t, t), bool))[None] & real[:, None, :]
    out = grouped_query_attention(q, [(kk, v, mask)], causal=True)
    return jnp.where(real[:, :, None, None], out, 0.0).astype(q.dtype)

  def fused(q, kk, v, lengths):
    return kernel_attention(q, kk, v, lengths, kernel)

  def with_grads(fn):
    def loss(q, kk, v, lengths, cotangent):
      return jnp.sum(fn(q, kk, v, lengths).astype(jnp.float32) * cotangent)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

  f32 = lambda x: x.astype(jnp.float32)

  def measure(h, name, fn, inputs, cotangent, want, want_grads, scale):
    forward = jax.jit(fn)
    backward = with_grads(fn)
    out = forward(*inputs, lengths)
    _, grads = backward(*inputs, lengths, cotangent)
    errors = [float(jnp.max(jnp.abs(f32(a) - f32(w)))) for a, w in zip((out, *grads), (want, *want_grads))]
    t_fwd = best_time(lambda: jax.block_until_ready(forward(*inputs, lengths)), repeats)
    t_bwd = best_time(lambda: jax.block_until_ready(backward(*inputs, lengths, cotangent)), repeats)
    report.add(
      f"| {h} | {name} | "
      + " | ".join(f"{e:.3g}" for e in errors)
      + f" | {scale:.3g} | {t_fwd * 1e3:.2f} | {t_bwd * 1e3:.2f} |"
    )

  report.add(
    f"B{b}, T{t}, {n} heads, {k} KV heads, key lengths {np.asarray(lengths).tolist()}, bf16; errors "
    "are max abs against an fp32 XLA reference over the real rows (the output's scale is given); "
    "times are the best of the timed calls.",
    "",
    "| head dim | implementation | output error | dq error | dk error | dv error | max abs output | "
    "forward ms | forward + backward ms |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
  )
  for h in (16, 8) if args.tiny else (128, 64):
    keys = jax.random.split(jax.random.key(h), 4)
    inputs = (
      jax.random.normal(keys[0], (b, t, n, h), jnp.bfloat16),
      jax.random.normal(keys[1], (b, k, t, h), jnp.bfloat16),
      jax.random.normal(keys[2], (b, k, t, h), jnp.bfloat16),
    )
    cotangent = jnp.where(real[:, :, None, None], jax.random.normal(keys[3], (b, t, n, h)), 0.0)
    want = jax.jit(xla)(*map(f32, inputs), lengths)
    _, want_grads = with_grads(xla)(*map(f32, inputs), lengths, cotangent)
    scale = float(jnp.max(jnp.abs(want)))
    for name, fn in (("XLA (the project's)", xla), (f"kernel ({kernel})", fused)):
      report.guarded(f"{h} | {name}", lambda: measure(h, name, fn, inputs, cotangent, want, want_grads, scale))

  def whole_model():
    layers = 2 if args.tiny else 4
    config = llama8b_shape(args.tiny, num_layers=layers, attention_impl="xla")
    model = create_sharded_model(config, None, seed=0)
    _, state = nnx.split(model)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, config.vocab_size, size=(2, t)), jnp.int32)
    logits = {}
    times = {}
    for impl in ("xla", "cudnn"):
      graphdef = nnx.graphdef(abstract_model(config.replace(attention_impl=impl)))
      forward = jax.jit(lambda state, ids, g=graphdef: nnx.merge(g, state)(ids))
      logits[impl] = np.asarray(forward(state, ids), np.float32)
      times[impl] = best_time(lambda: jax.block_until_ready(forward(state, ids)), repeats)
    err = np.abs(logits["cudnn"] - logits["xla"])
    top1 = np.mean(logits["cudnn"].argmax(-1) == logits["xla"].argmax(-1))
    report.add(
      "",
      f"Whole model, {config.hidden_size} wide, {layers} layers, bf16, 2 x {t} tokens: "
      f"`attention_impl=cudnn` (runs as {resolve('cudnn')} here) against `xla`: logits max abs "
      f"difference {err.max():.3g} (mean {err.mean():.3g}, mean abs logit "
      f"{np.abs(logits['xla']).mean():.3g}), top-1 agreement {top1:.2%}; forward "
      f"{times['cudnn'] * 1e3:.1f} ms against {times['xla'] * 1e3:.1f} ms "
      f"({times['xla'] / times['cudnn']:.2f}x).",
    )

  report.guarded("whole model", whole_model)


if __name__ == "__main__":
  sys.exit(main())
