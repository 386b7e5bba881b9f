"""Decode throughput on SmolLM2-135M-Instruct (fp32, CPU) against transformers `generate`.

    python experiments/benchmarks/decode_throughput.py [--batches=1,8,32] [--new_tokens=128]

Measured side by side in one run, both models loaded from the same embedded GGUF:
  1. tokens/s of greedy decode at each batch size, 128 new tokens, no early stop; the ratio
     helpsteer_jax / transformers, for the decode engine with its default layout (on CPU switched
     layers, and unrolled layers with fused input projections at batch 1: sampling/engine_api.py), the
     engine on the model's own scanned layers, and the earlier static batch (scanned);
  2. batch-1 decode as a fraction of the memory-bandwidth bound (bandwidth measured here with a
     large array copy, divided by the parameter bytes read per token), end to end and over the
     engine's decode steps alone (its own decode seconds: no prefill, no setup). A shared CPU's
     bandwidth drifts by 10-20% within minutes, so `--bound_pairs` batch-1 runs alternate with
     bandwidth measurements: each run is held against the higher of the bandwidths measured just
     before and just after it, and the report gives every pair, their median and the best run
     against the best bandwidth of the whole series. Each pair also runs the other layouts of
     `--bound_layouts` (unrolled and scanned layers), so the per-shape choice of layout is
     measured against its alternatives between the same bandwidth measurements;
  3. n samples sharing one prefill against n prefills of n long prompts of the same length
     (identical but for their last token: the engine would share the prefill of identical ones).
Writes a Markdown table (default experiments/benchmarks/results/decode_throughput.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from timing import best_time, cpu_name, write_report


def measure_bandwidth(num_bytes: int = 1 << 30, repeats: int = 5) -> float:
  """Bytes/s of a large array copy (read + write counted), best of `repeats`."""
  src = np.ones(num_bytes // 4, np.float32)
  dst = np.empty_like(src)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - start)
  return 2 * num_bytes / best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="1,8,32")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--prompt_tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--bound_pairs", type=int, default=6)
  parser.add_argument(
    "--bound_layouts",
    default="auto,unrolled,model",
    help="engine layouts run in each batch-1 pair, the default layout first",
  )
  parser.add_argument("--shared_prefill_n", type=int, default=8)
  parser.add_argument("--shared_prefill_prompt", type=int, default=1024)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "decode_throughput.md"))
  args = parser.parse_args()
  layouts = args.bound_layouts.split(",")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")

  import jax
  import torch
  import transformers
  from static_batch import sample_tokens_static

  import helpsteer_jax as hj
  from helpsteer_jax.checkpoints.embedded import embedded_model_path
  from helpsteer_jax.models.decode.decode_layout import LAYOUTS
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens

  if layouts[0] != "auto" or not set(layouts) <= {"auto", *LAYOUTS}:
    raise SystemExit(f"--bound_layouts={args.bound_layouts}: expected auto first, then any of {LAYOUTS}")
  path = embedded_model_path()
  model, _ = hj.load_pretrained(path, show_progress=False)

  def engine_run(prompts, settings, layout):
    engine = Engine(model, EngineSettings(num_slots=len(prompts), layout=layout))
    for i, p in enumerate(prompts):
      engine.submit(Request(p, settings, sample_key(0, i)))
    engine.run()
    return engine

  reference = transformers.AutoModelForCausalLM.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
  ).eval()
  torch.set_num_threads(os.cpu_count() or 1)
  param_bytes = model.config.num_params() * 4
  rng = np.random.default_rng(0)
  settings = SamplingSettings(max_new_tokens=args.new_tokens)  # no stop tokens: always full length

  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    prompts = rng.integers(100, 40000, size=(batch, args.prompt_tokens)).tolist()
    ours = lambda: sample_tokens(model, prompts, settings)
    ours()  # compile
    t_ours = best_time(ours, args.repeats)
    scanned = lambda: engine_run(prompts, settings, "model")
    scanned()
    t_scanned = best_time(scanned, args.repeats)
    static = lambda: sample_tokens_static(model, prompts, settings)
    static()
    t_static = best_time(static, args.repeats)
    ids = torch.tensor(prompts)

    def theirs():
      with torch.no_grad():
        reference.generate(
          ids,
          attention_mask=torch.ones_like(ids),
          do_sample=False,
          max_new_tokens=args.new_tokens,
          min_new_tokens=args.new_tokens,
          pad_token_id=0,
        )

    theirs()  # warm up
    t_theirs = best_time(theirs, args.repeats)
    tokens = batch * args.new_tokens
    rows.append((batch, tokens / t_ours, tokens / t_scanned, tokens / t_static, tokens / t_theirs))
    if batch == 1:
      batch1_prompts = prompts
    print(
      f"batch {batch}: engine {tokens / t_ours:.1f} tok/s ({t_theirs / t_ours:.2f}x), engine scanned "
      f"{tokens / t_scanned:.1f} ({t_theirs / t_scanned:.2f}x), static batch {tokens / t_static:.1f} "
      f"({t_theirs / t_static:.2f}x), transformers {tokens / t_theirs:.1f} tok/s",
      flush=True,
    )

  bandwidth = measure_bandwidth()
  bound = bandwidth / param_bytes
  batch1 = rows[0][1] if rows and rows[0][0] == 1 else None  # the default layout, end to end
  # Per layout: (bandwidth around the run, end-to-end tok/s, decode steps' tok/s) for each pair.
  series: dict[str, list] = {layout: [] for layout in layouts}
  if batch1 is not None:
    for layout in layouts[1:]:
      engine_run(batch1_prompts, settings, layout)  # compile
    around = [measure_bandwidth(repeats=3)]
    for _ in range(args.bound_pairs):
      runs = []
      for layout in layouts:
        start = time.perf_counter()
        engine = engine_run(batch1_prompts, settings, layout)
        seconds = time.perf_counter() - start
        stats = engine.stats()
        runs.append((layout, args.new_tokens / seconds, stats["decode_tokens"] / stats["seconds"]["decode"]))
        if layout == "auto":
          batch1_layout = engine.layout
      around.append(measure_bandwidth(repeats=3))
      for layout, e, d in runs:
        series[layout].append((max(around[-2:]), e, d))
    best_bound = max(around) / param_bytes
  pairs = series["auto"]

  # n samples of one long prompt: one shared prefill vs n prefills.
  n, length = args.shared_prefill_n, args.shared_prefill_prompt
  prompt = rng.integers(100, 40000, size=length).tolist()
  short = SamplingSettings(max_new_tokens=8)
  shared = lambda: sample_tokens(model, [prompt], short, n=n)
  # The engine reuses the prefill chunks of prompts that start alike, so the separate ones differ
  # in their first token.
  distinct = [[prompt[0] + i] + prompt[1:] for i in range(n)]
  separate = lambda: sample_tokens(model, distinct, short, n=1)
  shared(), separate()
  t_shared, t_separate = best_time(shared, args.repeats), best_time(separate, args.repeats)

  lines = [
    "# Decode throughput: SmolLM2-135M-Instruct, fp32, CPU",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores; "
    f"jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}. "
    f"Greedy, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens, best of {args.repeats}.",
    "",
    "| batch | engine tok/s, default layout | engine, scanned layers | static batch (scanned) | transformers tok/s | ratio, default | ratio, engine scanned | ratio, static |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
    *[
      f"| {b} | {a:.1f} | {e:.1f} | {u:.1f} | {t:.1f} | {a / t:.2f}x | {e / t:.2f}x | {u / t:.2f}x |"
      for b, a, e, u, t in rows
    ],
    "",
    f"Memory bandwidth (array copy): {bandwidth / 1e9:.1f} GB/s; parameters {param_bytes / 1e6:.0f} MB "
    f"-> batch-1 bound {bound:.1f} tok/s.",
  ]
  if batch1 is not None:
    fractions = lambda runs: [(e / (b / param_bytes), d / (b / param_bytes)) for b, e, d in runs]
    ratios = fractions(pairs)
    best_e, best_d = max(e for _, e, _ in pairs), max(d for _, _, d in pairs)
    lines += [
      "",
      f"Batch-1 decode (default layout, here {batch1_layout}) against the bound, {len(pairs)} runs "
      "alternating with bandwidth measurements (each run against the higher bandwidth of the two "
      "around it):",
      "",
      "| run | bandwidth GB/s | bound tok/s | end to end tok/s | of the bound | decode steps tok/s | of the bound |",
      "|---:|---:|---:|---:|---:|---:|---:|",
      *[
        f"| {i + 1} | {b / 1e9:.1f} | {b / param_bytes:.1f} | {e:.1f} | {re:.0%} | {d:.1f} | {rd:.0%} |"
        for i, ((b, e, d), (re, rd)) in enumerate(zip(pairs, ratios))
      ],
      "",
      f"Median of the runs: end to end {np.median([r[0] for r in ratios]):.0%} of the bound, decode "
      f"steps {np.median([r[1] for r in ratios]):.0%}. Best run against the best bandwidth of the "
      f"series ({best_bound:.1f} tok/s): end to end {best_e:.1f} tok/s = {best_e / best_bound:.0%}, "
      f"decode steps {best_d:.1f} tok/s = {best_d / best_bound:.0%}.",
    ]
    if len(layouts) > 1:
      names = {
        "auto": f"default ({batch1_layout})",
        "unrolled": "unrolled layers",
        "model": "the model's scanned layers",
        "switched": "switched layers",
        "fused": "fused projections",
      }
      lines += [
        "",
        "The same pairs ran every layout one after another between the same two bandwidth "
        "measurements; medians over the pairs:",
        "",
        "| batch-1 layout | end to end tok/s | of the bound | decode steps tok/s | of the bound |",
        "|---|---:|---:|---:|---:|",
      ]
      for layout in layouts:
        (_, e, d), (fe, fd) = np.median(series[layout], axis=0), np.median(fractions(series[layout]), axis=0)
        lines.append(f"| {names.get(layout, layout)} | {e:.1f} | {fe:.0%} | {d:.1f} | {fd:.0%} |")
  lines += [
    "",
    f"{n} samples of one {length}-token prompt (8 new tokens each): shared prefill "
    f"{t_shared:.2f} s, {n} prompts differing in their first token (one prefill each) "
    f"{t_separate:.2f} s -> {t_separate / t_shared:.2f}x.",
  ]
  write_report(args.out, lines)


if __name__ == "__main__":
  sys.exit(main())
