"""Decode tokens/s of the engine for an 8B-shaped Llama (bf16, random weights) against the HBM and
FLOP bounds, on the device.

    python experiments/benchmarks/gpu_decode.py --out DIR [--tiny]

Each batch size decodes that many 128-token prompts, 128 new tokens each with no stop token, in an
engine of as many slots: once to compile, then timed. The decode steps' tokens/s (the engine's own
decode seconds: no prefill) are set against
  - the HBM bound: bytes a step must read, over the bandwidth of an on-device copy measured here.
    The bytes are the weights less the input embedding (a gather of B rows) plus the KV cache the
    step's attention reads: every slot's keys and values up to the longest live slot, rounded up
    to the engine's attention block (models/decode/decode_attention.py), averaged over the run's steps;
  - the FLOP bound: 2 x the matmul parameters per token plus the attention's 4 L N H x context,
    against the device's dense bf16 peak.
Batch 1 runs again in the unrolled layout and in the model's own scanned layers
(`EngineSettings(layout=...)`), the layouts the default is chosen between.
"""

from __future__ import annotations

import sys

import numpy as np
from gpu_common import Report, copy_bandwidth, device, llama8b_shape, parse_args, seconds_of


def step_costs(config, batch: int, prompt: int, new_tokens: int, block: int) -> tuple[float, float]:
  """(mean bytes read, mean FLOPs) of a decode step of `batch` slots that all hold the same length.

  The first token comes from the prefill's logits; decode step i (0-based) appends token i + 2 with
  prompt + i + 1 positions attended (the cache's prompt + i tokens and the new one)."""
  from helpsteer_jax.models.create import count_params

  matmul_params = count_params(config) - config.vocab_size * config.hidden_size
  # The slot cache holds keys and values in the compute dtype (models/decode/slot_cache.py).
  kv_per_position = 2 * config.num_layers * config.num_kv_heads * config.head_dim * config.compute_dtype.itemsize
  steps = np.arange(new_tokens - 1)
  cached = prompt + steps
  read_positions = np.ceil(cached / block) * block
  bytes_per_step = matmul_params * config.weight_dtype.itemsize + batch * kv_per_position * read_positions
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * (cached + 1)
  flops_per_step = batch * (2 * matmul_params + attention)
  return float(bytes_per_step.mean()), float(flops_per_step.mean())


def main() -> None:
  args = parse_args(__doc__)
  from helpsteer_jax.models.create import create_sharded_model
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings

  dev = device()
  config = llama8b_shape(args.tiny)
  model = create_sharded_model(config, None, seed=0)
  bandwidth = copy_bandwidth(64 << 20 if args.tiny else 4 << 30)
  batches = (1, 4, 8) if args.tiny else (1, 8, 32, 64, 128, 256)
  prompt, new_tokens = (32, 16) if args.tiny else (128, 128)
  report = Report(args.out, "decode", f"Decode against the HBM and FLOP bounds ({dev.describe})")
  peak = dev.peak_bf16
  report.add(
    f"{config.num_layers} layers, {config.hidden_size} wide, bf16; {prompt}-token prompts, {new_tokens} "
    f"new tokens; copy bandwidth {bandwidth / 1e9:,.0f} GB/s, bf16 peak "
    f"{'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown'}. Bound = the slower of the "
    "two; tok/s are the decode steps' (end to end includes prefill and inserts).",
    "",
    "| batch | layout | compile + first run s | decode tok/s | end to end tok/s | HBM bound tok/s | "
    "of HBM bound | FLOP bound tok/s | of the bound |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
  )
  rng = np.random.default_rng(0)

  def measure(batch, layout):
    prompts = rng.integers(100, config.vocab_size, size=(batch, prompt)).tolist()
    settings = EngineSettings(num_slots=batch, layout=layout)
    holder = {}

    def run():
      engine = Engine(model, settings)
      for i, p in enumerate(prompts):
        engine.submit(Request(p, SamplingSettings(max_new_tokens=new_tokens), sample_key(0, i)))
      engine.run()
      holder["engine"] = engine

    cold = seconds_of(run)
    total = seconds_of(run)
    engine = holder["engine"]
    stats = engine.stats()
    rate = stats["decode_tokens"] / stats["seconds"]["decode"]
    step_bytes, step_flops = step_costs(config, batch, prompt, new_tokens, settings.attention_block)
    hbm = batch * bandwidth / step_bytes
    flop = batch * peak / step_flops if peak else float("inf")
    bound = min(hbm, flop)
    report.add(
      f"| {batch} | {engine.layout} | {cold:.1f} | {rate:,.0f} | {batch * new_tokens / total:,.0f} | "
      f"{hbm:,.0f} | {rate / hbm:.0%} | {'%.0f' % flop if peak else '-'} | {rate / bound:.0%} |"
    )

  for batch, layout in [(b, "auto") for b in batches] + [(1, "unrolled"), (1, "model")]:
    report.guarded(f"{batch} | {layout}", lambda: measure(batch, layout))


if __name__ == "__main__":
  sys.exit(main())
