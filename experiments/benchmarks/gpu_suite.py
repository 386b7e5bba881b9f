"""One prepared GPU run: decode against the HBM bound, the engine's slot use at 8B shape, and MFU.

    python experiments/benchmarks/gpu_suite.py [--parts=decode,engine,train] [--quick]

On one GPU (H100/H200 class), random weights, bf16:
  decode  tokens/s of the decode engine at batch 1, 8, 32, 64, 128, 256 for an 8B-shaped Llama
          (128-token prompts, 128 new tokens, no stop), against the HBM-bandwidth bound (bandwidth
          measured here with a device copy, divided by the weight and cache bytes read per step);
  engine  the engine's slot use on the search's shape of work at 8B: drafts, then feedback on each
          draft, then edits, lengths drawn from a long-tailed distribution (random weights never
          stop, so each sample's length is its max_new_tokens);
  train   training MFU of a ~1B and an 8B-shaped Llama (bf16, cuDNN attention, full remat for 8B)
          against the GPU's dense bf16 peak, to compare with MaxText's published 50-60% for Llama on
          H100-class GPUs.
Writes a Markdown table (default experiments/benchmarks/results/gpu_suite.md) naming the device.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

from timing import best_time, write_report

# Dense bf16 peak FLOP/s by device kind (vendor figures, no sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_bandwidth(num_bytes: int = 4 << 30) -> float:
  import jax
  import jax.numpy as jnp

  x = jnp.ones((num_bytes // 2,), jnp.bfloat16)
  copy = jax.jit(lambda a: a + jnp.asarray(1, a.dtype))
  jax.block_until_ready(copy(x))
  seconds = best_time(lambda: jax.block_until_ready(copy(x)), 5)
  return 2 * num_bytes / seconds


def random_model(config):
  from helpsteer_jax.models.create import create_sharded_model

  return create_sharded_model(config, None, seed=0)


def decode_part(config, batches, new_tokens: int, bandwidth: float) -> list[str]:
  from helpsteer_jax.models.create import count_params
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings

  model = random_model(config)
  weight_bytes = count_params(config) * 2
  kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 2
  rng = np.random.default_rng(0)
  rows = []
  for batch in batches:
    def run():
      engine = Engine(model, EngineSettings(num_slots=batch))
      for i in range(batch):
        engine.submit(Request(rng.integers(100, 30000, 128).tolist(), SamplingSettings(max_new_tokens=new_tokens),
                              sample_key(0, i)))
      engine.run()
      return engine.stats()

    run()  # compile
    stats = run()
    rate = stats["decode_tokens"] / stats["seconds"]["decode"]
    mean_len = 128 + new_tokens / 2
    step_bytes = weight_bytes + batch * mean_len * kv_per_token
    bound = batch * bandwidth / step_bytes
    rows.append(f"| {batch} | {rate:.0f} | {bound:.0f} | {rate / bound:.0%} |")
    print(rows[-1], flush=True)
  return ["| batch | decode tok/s | HBM bound tok/s | fraction |", "|---:|---:|---:|---:|", *rows]


def engine_part(config, slots: int, prompts: int, max_new: int) -> list[str]:
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings

  model = random_model(config)
  rng = np.random.default_rng(1)
  length = lambda: int(min(max_new, max(8, rng.lognormal(np.log(max_new / 4), 0.8))))
  engine = Engine(model, EngineSettings(num_slots=slots))

  def submit(prompt_len, n, tag, then):
    for _ in range(1):
      request = Request(rng.integers(100, 30000, prompt_len).tolist(),
                        SamplingSettings(max_new_tokens=length(), temperature=1.0), sample_key(tag, rng.random()),
                        n=n, tag=tag, on_done=lambda r, s: then(r, s))
      engine.submit(request)

  def after_drafts(request, samples):
    for s in samples:
      submit(len(request.prompt) + len(s) + 64, 2, "feedback", after_feedback)

  def after_feedback(request, samples):
    submit(len(request.prompt) + sum(len(s) for s in samples) + 64, 1, "edit", lambda r, s: None)

  start = time.perf_counter()
  for _ in range(prompts):
    submit(int(rng.integers(64, 512)), 2, "draft", after_drafts)
  engine.run()
  seconds = time.perf_counter() - start
  stats = engine.stats()
  tokens = sum(s["tokens"] for s in stats["stages"].values())
  return [f"Engine at 8B shape, {slots} slots, {prompts} prompts (2 drafts x 2 feedbacks x 1 edit, "
          f"lengths up to {max_new}): slot use {stats['slot_use']:.1%}, {tokens / seconds:.0f} tok/s "
          f"overall, seconds {stats['seconds']}."]


def train_part(config, batch: int, seq_len: int, remat: str, peak: float) -> str:
  import jax
  import jax.numpy as jnp
  import ml_collections
  from flax import nnx

  from helpsteer_jax.train.recipe_cost import attention_flops_per_token, model_flops_per_token
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.sft import sft_loss
  from helpsteer_jax.train.state import init_state
  from helpsteer_jax.train.step import make_train_step

  config = config.replace(remat_policy=remat, attention_impl="cudnn")
  model = random_model(config)
  ids = np.random.default_rng(0).integers(100, 30000, size=(batch, seq_len + 1))
  data = {"input_ids": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
          "loss_weights": jnp.ones((batch, seq_len), jnp.float32),
          "segment_ids": jnp.ones((batch, seq_len), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch, seq_len))}
  # Packed-segment masks keep the XLA attention; one segment per row lets the kernel run.
  data.pop("segment_ids")
  optim = ml_collections.ConfigDict(dict(learning_rate=1e-5, warmup_steps=0, schedule="constant",
                                         final_lr_fraction=1.0, b1=0.9, b2=0.95, eps=1e-8,
                                         weight_decay=0.01, grad_clip_norm=1.0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer, schedule = make_optimizer(optim, 1000, params)
  holder = {"state": init_state(params, optimizer)}
  del model, params
  step = jax.jit(make_train_step(graphdef, rest, functools.partial(sft_loss, chunk=0), optimizer, schedule),
                 donate_argnums=(0,))
  key = jax.random.key(0)

  def run():
    holder["state"], metrics = step(holder["state"], data, key)
    jax.block_until_ready(metrics["loss"])

  run()
  seconds = best_time(run, 3)
  flops = (model_flops_per_token(config) + attention_flops_per_token(config, seq_len)) * batch * seq_len
  mfu = flops / seconds / peak
  return (f"| {count(config) / 1e9:.1f}B | {batch} x {seq_len} | {remat} | {batch * seq_len / seconds:.0f} | "
          f"{mfu:.1%} |")


def count(config) -> int:
  from helpsteer_jax.models.create import count_params
  return count_params(config)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default="decode,engine,train")
  parser.add_argument("--quick", action="store_true", help="fewer batch sizes and shorter runs")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpu_suite.md"))
  args = parser.parse_args()

  import jax

  from helpsteer_jax.models.config import get_preset

  device = jax.devices()[0]
  kind = getattr(device, "device_kind", str(device))
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), 989e12)
  bf16 = dict(dtype="bfloat16", param_dtype="bfloat16")
  llama8b = get_preset("llama3_8b", **bf16)
  llama1b = llama8b.replace(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                            num_kv_heads=8, head_dim=64)
  parts = args.parts.split(",")
  bandwidth = device_bandwidth()
  lines = [f"# GPU suite on {kind} ({jax.default_backend()}, jax {jax.__version__})", "",
           f"Measured HBM bandwidth (device copy): {bandwidth / 1e9:.0f} GB/s; bf16 peak taken as "
           f"{peak / 1e12:.0f} TFLOP/s.", ""]
  if "decode" in parts:
    batches = [1, 32, 256] if args.quick else [1, 8, 32, 64, 128, 256]
    lines += decode_part(llama8b, batches, 64 if args.quick else 128, bandwidth) + [""]
  if "engine" in parts:
    lines += engine_part(llama8b, 64, 16 if args.quick else 32, 256 if args.quick else 1024) + [""]
  if "train" in parts:
    lines += ["| model | tokens per step | remat | tokens/s | MFU |", "|---|---:|---|---:|---:|",
              train_part(llama1b, 8, 2048, "none", peak),
              train_part(llama8b, 2 if args.quick else 4, 2048, "full", peak)]
  write_report(args.out, lines)


if __name__ == "__main__":
  sys.exit(main())
