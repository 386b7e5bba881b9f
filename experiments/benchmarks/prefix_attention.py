"""Decode steps with shared prefixes read once (a prefix table) against every slot reading its own.

    python experiments/benchmarks/prefix_attention.py [--slots=16,64,256] [--share=32] [--prefix=1024]
        [--own=256] [--layers=8] [--repeats=5] [--out=PATH]

The search's feedback stage in one step: slots in groups of `--share` (the feedback samples of one
draft) that each begin with the same `--prefix` positions (the conversation and the draft), then
hold 1 to `--own` positions of their own (the feedback prompt's tail and the feedback so far).
For each slot count, one decode step of SmolLM2-135M's shape (random weights; `--layers` of its 30,
which scales both layouts alike) over the same keys and values held two ways:
  - today's layout: every slot's cache row holds its prefix and its own positions (the default
    decode attention for the backend: per_slot on CPU);
  - a prefix table: each group's prefix held once in a table entry, the rows holding only their own
    positions (models/decode/prefix_attention.py).
The logits of the two must be the same bit for bit (checked); the report gives each step time (the
best of `--repeats`, caches donated from step to step as the engine does), their ratio, and the
cache memory each layout holds, also for Llama-3-70B (bf16) at the same positions.
Writes a Markdown table (default experiments/benchmarks/results/prefix_attention.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from timing import cpu_name, write_report


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--slots", default="16,64,256", help="comma-separated slot counts")
  parser.add_argument("--share", type=int, default=32, help="slots that share one prefix")
  parser.add_argument("--prefix", type=int, default=1024, help="shared positions (a multiple of --block)")
  parser.add_argument("--own", type=int, default=256, help="most positions a slot holds after its prefix")
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--block", type=int, default=128, help="attention block (EngineSettings.attention_block)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "prefix_attention.md")
  )
  args = parser.parse_args(argv)
  args.slots = [int(s) for s in args.slots.split(",")]
  for name in ("share", "prefix", "own", "layers", "block", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)}; expected at least 1")
  if args.prefix % args.block:
    parser.error(f"--prefix={args.prefix} is not a multiple of --block={args.block} (a table entry holds whole blocks)")
  if min(args.slots) < 1:
    parser.error(f"--slots={args.slots}; expected positive counts")
  return args


def cache_bytes(config, slots: int, entries: int, prefix: int, row: int, itemsize: int, table: bool) -> int:
  """Bytes of keys and values: rows of `row` positions after the prefix, plus the table's entries,
  or rows that hold the prefix too."""
  per_position = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
  positions = slots * row + entries * prefix if table else slots * (prefix + row)
  return positions * per_position


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  import jax
  import jax.numpy as jnp

  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.create import create_sharded_model
  from helpsteer_jax.models.decode.paged_decode import resolve
  from helpsteer_jax.models.decode.prefix_table import PrefixTable
  from helpsteer_jax.models.decode.slot_cache import SlotCache

  config = get_preset("smollm2_135m", num_layers=args.layers)
  model = create_sharded_model(config, None)
  transposed = model.slot_keys_transposed()
  baseline = resolve(config.decode_attention_impl, config.compute_dtype)
  block = args.block
  row = -(-(args.own + args.repeats + 2) // block) * block  # own positions and the steps' new tokens
  step = jax.jit(lambda m, tokens, cache, active: m.decode_slots(tokens, cache, active, block), donate_argnums=(2,))
  seventy = get_preset("llama3_70b")
  rng = np.random.default_rng(0)
  lines = [
    "# Shared prefixes read once in decode",
    "",
    f"`python experiments/benchmarks/prefix_attention.py {' '.join(argv)}`".replace(" `", "`"),
    "",
    f"CPU: {cpu_name()}, {os.cpu_count()} cores; JAX {jax.__version__}, backend {jax.default_backend()}. "
    f"SmolLM2-135M's shape with {args.layers} layers (fp32, random weights); slots in groups of "
    f"{args.share} sharing {args.prefix} positions, each holding 1 to {args.own} of its own; attention "
    f"blocks of {block}. Today's layout decodes with `{baseline}` attention. One decode step, best of "
    f"{args.repeats}; the logits are the same bit for bit in every row.",
    "",
    "| slots | entries | today's layout (ms) | prefix table (ms) | speed-up | cache today (MB) | cache with table (MB) "
    "| 70B bf16 today (GB) | 70B bf16 with table (GB) |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for b in args.slots:
    entries = -(-b // args.share)
    of_slot = np.arange(b) // args.share
    own = rng.integers(1, args.own + 1, size=b)
    lengths = args.prefix + own  # each cache gets its own copy: caches are donated
    shape = lambda n, s: (config.num_layers, n, config.num_kv_heads, s, config.head_dim)
    table_k = rng.standard_normal(shape(entries, args.prefix), np.float32)
    table_v = rng.standard_normal(shape(entries, args.prefix), np.float32)
    own_k = rng.standard_normal(shape(b, row), np.float32)
    own_v = rng.standard_normal(shape(b, row), np.float32)
    keys = (lambda x: np.swapaxes(x, 3, 4)) if transposed else (lambda x: x)
    tokens = jnp.asarray(rng.integers(0, config.vocab_size, size=b), jnp.int32)
    active = jnp.ones((b,), bool)

    def today() -> SlotCache:
      k = np.concatenate([table_k[:, of_slot], own_k], axis=3)
      v = np.concatenate([table_v[:, of_slot], own_v], axis=3)
      return SlotCache(
        jnp.asarray(keys(k)), jnp.asarray(v), jnp.asarray(lengths, jnp.int32), keys_transposed=transposed
      )

    def shared() -> SlotCache:
      table = PrefixTable(
        jnp.asarray(keys(table_k)),
        jnp.asarray(table_v),
        jnp.full((entries,), args.prefix, jnp.int32),
        jnp.asarray(of_slot, jnp.int32),
      )
      return SlotCache(
        jnp.asarray(keys(own_k)),
        jnp.asarray(own_v),
        jnp.asarray(lengths, jnp.int32),
        keys_transposed=transposed,
        prefix=table,
      )

    times, logits = [], []
    for make in (today, shared):
      cache = make()
      out, cache = step(model, tokens, cache, active)  # compiles
      logits.append(np.asarray(out))
      best = float("inf")
      for _ in range(args.repeats):
        start = time.perf_counter()
        out, cache = step(model, tokens, cache, active)
        out.block_until_ready()
        best = min(best, time.perf_counter() - start)
      times.append(best)
      del cache
    if not np.array_equal(logits[0], logits[1]):
      raise SystemExit(f"{b} slots: the logits differ (max {np.max(np.abs(logits[0] - logits[1])):.3g})")
    mb = lambda table: cache_bytes(config, b, entries, args.prefix, row, 4, table) / 2**20
    gb = lambda table: cache_bytes(seventy, b, entries, args.prefix, row, 2, table) / 2**30
    lines.append(
      f"| {b} | {entries} | {times[0] * 1e3:.1f} | {times[1] * 1e3:.1f} | {times[0] / times[1]:.2f}x "
      f"| {mb(False):.0f} | {mb(True):.0f} | {gb(False):.1f} | {gb(True):.1f} |"
    )
    print(lines[-1], flush=True)
  lines += [
    "",
    "Cache memory counts keys and values at the positions above: today every slot holds its prefix; with "
    f"the table each entry holds it once and each slot its own {row} positions.",
  ]
  write_report(args.out, lines)


if __name__ == "__main__":
  main(sys.argv[1:])
