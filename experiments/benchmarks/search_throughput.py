"""The search's decode engine on its own workload, against a static batch on the same machine.

    python experiments/benchmarks/search_throughput.py [--prompts=8]

Measured in one run, on the embedded SmolLM2-135M-Instruct (fp32, CPU):
  1. the README demo config (experiments/scaling/smollm2_self_feedback_edit.py) on `--prompts`
     Arena-Hard prompts: first with an empty compilation cache (a new user's first run: every
     program compiles), then `--later_runs` times, each in a new process that finds the first one's
     programs in that cache (every later run: helpsteer_jax/compilation_cache.py). Each gives generated tokens
     (drafts, feedback, edits and the greedy reference) per second over the whole search,
     compilation or cache loading included and model loading excluded; the engine's slot use
     (decode-step tokens / slots x steps) and tokens/s per stage; where the time goes (prefill,
     decode, selection, the rest: host work and inserts);
  2. the raw rate: a static batch of 16 rows decoding 160 fixed-length tokens (no stop token),
     after its compilation, best of `--repeats`, measured after each search: this CPU's speed
     drifts by 10-30% over minutes, so the first search is compared with the rate right after it
     and each later one with the mean of the rates just before and just after it;
and the ratios. Writes a Markdown report (default experiments/benchmarks/results/search_throughput.md).

    python experiments/benchmarks/search_throughput.py --options=all [--prompts=8]

instead runs the search once per option of how feedback is sampled (OPTIONS: `all` at once, in
`waves` until M are kept, with `early_exit` of feedback whose opening fails the rule, or both) or
of how the engine holds shared prefixes (`prefix_table`) or of when a prompt stops spending
(`budget_3x`: a token budget of 3x the greedy answer; `settle_0.5`: a settling margin of 0.5), each in a new process over the programs
first (compiling) runs of every option kept, with the static batch
measured after each. It reports per option the tokens generated per prompt (all stages, and
feedback alone), tokens/s and its ratio to the static batch, the mean score of the chosen answers
and how many chosen answers differ from the first option's (default
experiments/benchmarks/results/search_options.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from timing import best_time, cpu_name, write_report

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


# Each option's search settings over the demo config's (scaling/search_settings.py).
OPTIONS = {
  "all": {},
  "waves": {"feedback_sampling": "waves"},
  "early_exit": {"feedback_early_exit": True},
  "waves+early_exit": {"feedback_sampling": "waves", "feedback_early_exit": True},
  "prefix_table": {"prefix_entries": 16},
  "budget_3x": {"token_budget": 3.0},
  "settle_0.5": {"settle_margin": 0.5},
}


def run_search(num_prompts: int, cache_dir: str, option: str = "all", overrides: str = "") -> dict:
  """One search with the compilation cache in `cache_dir` -> its seconds, tokens and stats.
  `overrides`: `search.name=value,...` applied after the option's."""
  from helpsteer_jax import compilation_cache
  from helpsteer_jax.checkpoints.model_pool import ModelPool
  from helpsteer_jax.data.prompt_sources import load_prompts
  from helpsteer_jax.scaling.run import build_search

  compilation_cache.enable({compilation_cache.ENV: cache_dir})
  config = demo_config(num_prompts)
  for name, value in OPTIONS[option].items():
    config.search[name] = value
  for item in filter(None, overrides.split(",")):
    name, value = item.split("=")
    block, field = name.split(".")
    config[block][field] = type(config[block][field])(value)
  search = build_search(config, ModelPool(config.mesh))  # loads the model: not timed
  items = load_prompts(config.prompts.source, config.prompts.path, config.prompts.limit, config.prompts.start)
  start = time.perf_counter()
  records = search.run(items, min_in_flight=config.prompts_per_batch, max_in_flight=config.prompts_in_flight)
  seconds = time.perf_counter() - start
  stats = search.stats()
  engine = next(iter(stats["engines"].values()))
  return {
    "seconds": seconds,
    "prompts": len(records),
    "records": [
      {
        "best": r["best"]["text"],
        "score": r["best"]["score"],
        "tokens": r["tokens"]["total"],
        "feedback_tokens": r["tokens"]["feedback"],
        "sampled": sum(r["effective_feedbacks"]["sampled"]),
        "stopped_early": r["effective_feedbacks"]["stopped_early"],
        "kept": r["effective_feedbacks"]["total"],
        "best_is_draft": r["best"]["group"] is None,
      }
      for r in records
    ],
    "engine": engine,
    "tokens": sum(s["tokens"] for s in engine["stages"].values()),
    "select_seconds": stats["select_seconds"],
    "model": search.policy.model,
  }


def static_rate(model, rows: int, tokens: int, repeats: int, compile_first: bool) -> float:
  from static_batch import sample_tokens_static

  from helpsteer_jax.sampling.sampler import SamplingSettings

  prompts = np.random.default_rng(0).integers(100, 40000, size=(rows, 32)).tolist()
  fixed = SamplingSettings(max_new_tokens=tokens)  # no stop token: every row runs to the end
  static = lambda: sample_tokens_static(model, prompts, fixed)
  if compile_first:
    static()  # compile (once per process)
  return rows * tokens / best_time(static, repeats)


def warm_search(args, cache_dir: str, option: str = "all") -> dict:
  """The search again in a new process (nothing compiled in memory) over the same cache."""
  command = [
    sys.executable,
    os.path.abspath(__file__),
    f"--prompts={args.prompts}",
    f"--search_only={cache_dir}",
    f"--option={option}",
    f"--overrides={args.overrides}",
  ]
  done = subprocess.run(command, check=True, capture_output=True, text=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--static_rows", type=int, default=16)
  parser.add_argument("--static_tokens", type=int, default=160)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--later_runs", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "search_throughput.md"))
  parser.add_argument("--options", default="", help="`all` or a comma-separated list of OPTIONS")
  parser.add_argument("--overrides", default="", help="config values for every run: search.num_feedbacks=4,...")
  parser.add_argument("--option", default="all", help=argparse.SUPPRESS)  # the warm run's option
  parser.add_argument("--search_only", default="", help=argparse.SUPPRESS)  # the warm run's process
  args = parser.parse_args()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # this script chooses the cache

  if args.search_only:
    run = run_search(args.prompts, args.search_only, args.option, args.overrides)
    engine = run["engine"]
    print(
      json.dumps(
        {
          "seconds": run["seconds"],
          "tokens": run["tokens"],
          "slot_use": engine["slot_use"],
          "select_seconds": run["select_seconds"],
          "engine_seconds": engine["seconds"],
          "records": run["records"],
        }
      )
    )
    return

  import jax

  if args.options:
    return compare_options(args)
  cache_dir = tempfile.mkdtemp(prefix="search_throughput_xla_")
  try:
    cold = run_search(args.prompts, cache_dir)
    model = cold["model"]
    rate = lambda first: static_rate(model, args.static_rows, args.static_tokens, args.repeats, first)
    rates = [rate(True)]
    warms = []
    for _ in range(args.later_runs):
      warms.append(warm_search(args, cache_dir))
      rates.append(rate(False))
  finally:
    shutil.rmtree(cache_dir, ignore_errors=True)
  # The static batch ran after each search: the first search is compared with the rate measured
  # right after it, each later one with the mean of the two around it.
  cold_static = rates[0]

  engine = cold["engine"]
  stages = engine["stages"]
  cold_s, search_tokens = cold["seconds"], cold["tokens"]
  cold_rate = search_tokens / cold_s
  seconds = engine["seconds"]
  split = lambda total, p, d, sel: (
    f"prefill {p:.1f} s ({p / total:.0%}), decode {d:.1f} s ({d / total:.0%}), selection "
    f"{sel:.1f} s ({sel / total:.0%}), the rest (host work, inserts, compilation outside those) "
    f"{total - p - d - sel:.1f} s ({(total - p - d - sel) / total:.0%})"
  )
  later = []  # (tokens, seconds, tok/s, static tok/s around it, ratio)
  for i, warm in enumerate(warms):
    static = (rates[i] + rates[i + 1]) / 2
    later.append(
      (
        warm["tokens"],
        warm["seconds"],
        warm["tokens"] / warm["seconds"],
        static,
        warm["tokens"] / warm["seconds"] / static,
      )
    )
  lines = [
    "# The search's throughput: SmolLM2-135M-Instruct, fp32, CPU",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}. "
    f"README demo config on {cold['prompts']} Arena-Hard prompts ({engine['num_slots']} slots); static "
    f"batch of {args.static_rows} rows x {args.static_tokens} tokens, best of {args.repeats}.",
    "",
    "| stage | requests | samples | tokens | prefill tokens | tokens/s over the stage's span |",
    "|---|---:|---:|---:|---:|---:|",
    *[
      f"| {name} | {s['requests']} | {s['samples']} | {s['tokens']} | {s['prefill_tokens']} | "
      f"{(s['tokens_per_s'] or 0):.1f} |"
      for name, s in stages.items()
    ],
    "",
    f"Slot use (decode-step tokens / slots x steps): {engine['slot_use']:.1%} over {engine['decode_steps']} steps.",
    "",
    "| run | search | tok/s | static batch tok/s | ratio |",
    "|---|---:|---:|---:|---:|",
    f"| first run (empty compilation cache) | {search_tokens} tokens in {cold_s:.1f} s | {cold_rate:.1f} | "
    f"{cold_static:.1f} | **{cold_rate / cold_static:.2f}** |",
    *[
      f"| later run {i + 1} (programs loaded from the cache) | {t} tokens in {sec:.1f} s | {r:.1f} | "
      f"{st:.1f} | **{ratio:.2f}** |"
      for i, (t, sec, r, st, ratio) in enumerate(later)
    ],
    "",
    "Static batch after each search: " + ", ".join(f"{r:.1f}" for r in rates) + " tok/s. "
    "Search times include compilation (or loading from the cache) and exclude model loading.",
    f"Where the first run's time goes: {split(cold_s, seconds.get('prefill', 0.0), seconds.get('decode', 0.0), cold['select_seconds'])}.",
    *[
      f"Where later run {i + 1}'s time goes: {split(w['seconds'], w['engine_seconds'].get('prefill', 0.0), w['engine_seconds'].get('decode', 0.0), w['select_seconds'])}."
      for i, w in enumerate(warms)
    ],
  ]
  write_report(args.out, lines)


def compare_options(args) -> None:
  """One search per option after a compiling one; the report described in the module's doc."""
  import jax

  options = list(OPTIONS) if args.options == "all" else args.options.split(",")
  unknown = [o for o in options if o not in OPTIONS]
  if unknown:
    raise SystemExit(f"unknown options {unknown}; known: {list(OPTIONS)}")
  out = args.out
  if out.endswith("search_throughput.md"):
    out = os.path.join(os.path.dirname(out), "search_options.md")
  cache_dir = tempfile.mkdtemp(prefix="search_options_xla_")
  try:
    # Compiles each option's programs (on at most 8 prompts: the later runs compile any they lack;
    # a prefix table decodes by programs of its own) and loads the model.
    first = run_search(min(args.prompts, 8), cache_dir, options[0], args.overrides)
    for option in options[1:]:
      run_search(min(args.prompts, 8), cache_dir, option, args.overrides)
    model = first["model"]
    static_rate(model, args.static_rows, args.static_tokens, 1, True)  # compiles the static batch
    runs, rates = {}, []
    for option in options:
      print(f"option {option} ...", file=sys.stderr, flush=True)
      runs[option] = warm_search(args, cache_dir, option)
      rates.append(static_rate(model, args.static_rows, args.static_tokens, args.repeats, False))
  finally:
    shutil.rmtree(cache_dir, ignore_errors=True)
  base = runs[options[0]]["records"]
  n = len(base)
  rows = []
  for i, option in enumerate(options):
    run, records = runs[option], runs[option]["records"]
    static = (rates[i - 1] + rates[i]) / 2 if i else rates[0]
    changed = sum(a["best"] != b["best"] for a, b in zip(base, records))
    mean = lambda key: sum(r[key] for r in records) / n
    rows.append(
      f"| {option} | {mean('tokens'):.0f} | {mean('feedback_tokens'):.0f} | {mean('sampled'):.2f} | "
      f"{mean('kept'):.2f} | {sum(r['stopped_early'] for r in records)} | {run['tokens'] / run['seconds']:.1f} | "
      f"{static:.1f} | **{run['tokens'] / run['seconds'] / static:.2f}** | {mean('score'):.3f} | "
      f"{changed} of {n} | {sum(r['best_is_draft'] for r in records)} |"
    )
  base_tokens = sum(r["tokens"] for r in base)
  lines = [
    "# Search options: tokens, speed and choices per option (SmolLM2-135M-Instruct, fp32, CPU)",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}. README demo config"
    f"{' with ' + args.overrides if args.overrides else ''} on {n} Arena-Hard prompts; each option in "
    "its own process over the programs a first run compiled; static batch of "
    f"{args.static_rows} rows x {args.static_tokens} tokens after each, best of {args.repeats}.",
    "",
    "| option | tokens / prompt | feedback tokens / prompt | feedback sampled / prompt | kept / prompt | "
    "stopped early | tok/s | static tok/s | ratio | mean chosen score | chosen differs from first | chosen is a draft |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    *rows,
    "",
    "Tokens / prompt: drafts, feedback and edits generated (the greedy reference excluded). "
    + ", ".join(
      f"{o}: {sum(r['tokens'] for r in runs[o]['records']) / base_tokens:.3f} of {options[0]}'s" for o in options[1:]
    )
    + ".",
  ]
  write_report(out, lines)


if __name__ == "__main__":
  sys.exit(main())
