"""The search's decode engine on its own workload, against a static batch on the same machine.

    python experiments/benchmarks/search_throughput.py [--prompts=8]

Measured in one run, on the embedded SmolLM2-135M-Instruct (fp32, CPU):
  1. the README demo config (experiments/scaling/smollm2_self_feedback_edit.py) on `--prompts`
     Arena-Hard prompts: generated tokens (drafts, feedback, edits and the greedy reference) per
     second over the whole search, compilation included and model loading excluded, as a new user
     sees it; the engine's slot use (decode-step tokens / slots x steps) and tokens/s per stage;
     where the time goes (prefill, decode, selection, the rest: host work and inserts);
  2. the raw rate: a static batch of 16 rows decoding 160 fixed-length tokens (no stop token),
     after its compilation, best of `--repeats`;
and the ratio of the two. Appends to a Markdown table (default
experiments/benchmarks/results/search_throughput.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time

import numpy as np

from timing import best_time, write_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "experiments", "scaling", "smollm2_self_feedback_edit.py")


def demo_config(num_prompts: int):
  spec = importlib.util.spec_from_file_location("demo", DEMO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.unlock()
  config.prompts.limit = num_prompts
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--static_rows", type=int, default=16)
  parser.add_argument("--static_tokens", type=int, default=160)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "search_throughput.md"))
  args = parser.parse_args()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

  import jax

  from helpsteer_jax.data.prompt_sources import load_prompts
  from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens_static
  from helpsteer_jax.checkpoints.model_pool import ModelPool
  from helpsteer_jax.scaling.run import build_search

  config = demo_config(args.prompts)
  pool = ModelPool(config.mesh)
  search = build_search(config, pool)  # loads the model: not timed
  items = load_prompts(config.prompts.source, config.prompts.path, config.prompts.limit, config.prompts.start)
  start = time.perf_counter()
  records = search.run(items, min_in_flight=config.prompts_per_batch, max_in_flight=config.prompts_in_flight)
  search_s = time.perf_counter() - start
  stats = search.stats()
  engine = next(iter(stats["engines"].values()))
  stages = engine["stages"]
  search_tokens = sum(s["tokens"] for s in stages.values())
  search_rate = search_tokens / search_s

  model = search.policy.model
  rng = np.random.default_rng(0)
  prompts = rng.integers(100, 40000, size=(args.static_rows, 32)).tolist()
  fixed = SamplingSettings(max_new_tokens=args.static_tokens)  # no stop token: every row runs to the end
  static = lambda: sample_tokens_static(model, prompts, fixed)
  static()  # compile
  static_rate = args.static_rows * args.static_tokens / best_time(static, args.repeats)

  seconds = engine["seconds"]
  prefill, decode = seconds.get("prefill", 0.0), seconds.get("decode", 0.0)
  select = stats["select_seconds"]
  rest = search_s - prefill - decode - select
  lines = [
      "# The search's throughput: SmolLM2-135M-Instruct, fp32, CPU",
      "",
      f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}. "
      f"README demo config on {len(records)} Arena-Hard prompts ({engine['num_slots']} slots); static "
      f"batch of {args.static_rows} rows x {args.static_tokens} tokens, best of {args.repeats}.",
      "",
      "| stage | requests | samples | tokens | prefill tokens | tokens/s over the stage's span |",
      "|---|---:|---:|---:|---:|---:|",
      *[f"| {name} | {s['requests']} | {s['samples']} | {s['tokens']} | {s['prefill_tokens']} | "
        f"{(s['tokens_per_s'] or 0):.1f} |" for name, s in stages.items()],
      "",
      f"Slot use (decode-step tokens / slots x steps): {engine['slot_use']:.1%} over "
      f"{engine['decode_steps']} steps.",
      f"Search: {search_tokens} tokens in {search_s:.1f} s = {search_rate:.1f} tok/s (compilation "
      f"included, model loading excluded). Static batch: {static_rate:.1f} tok/s. "
      f"**Ratio {search_rate / static_rate:.2f}.**",
      f"Where the search's time goes: prefill {prefill:.1f} s ({prefill / search_s:.0%}), decode "
      f"{decode:.1f} s ({decode / search_s:.0%}), selection {select:.1f} s ({select / search_s:.0%}), "
      f"the rest (host work, inserts, compilation outside those) {rest:.1f} s ({rest / search_s:.0%}).",
  ]
  write_report(args.out, lines)


if __name__ == "__main__":
  sys.exit(main())
