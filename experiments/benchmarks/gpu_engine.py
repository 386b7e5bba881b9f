"""The decode engine on a search-like workload at 8B shape (bf16, random weights), on the device.

    python experiments/benchmarks/gpu_engine.py --out DIR [--tiny]

The search's shape of work: each prompt's 2 drafts, then 2 feedbacks on each draft (prompt +
draft + an instruction), then an edit of each (prompt + draft + its feedbacks), every request
submitted as the one it follows finishes, lengths drawn from a long-tailed distribution (random
weights never stop, so a sample's length is its max_new_tokens). The same workload runs twice
with the same settings: the first run includes every compile, the second reuses the compiled
programs, so compile time is the difference. Reports slot use and generated tokens/s per stage.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from gpu_common import Report, device, llama8b_shape, parse_args


def run_workload(model, slots: int, prompts: int, max_new: int, vocab: int) -> tuple[float, dict]:
  """(seconds, engine stats) of one run; the same arguments give the same requests."""
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.keys import sample_key
  from helpsteer_jax.sampling.sampler import SamplingSettings

  rng = np.random.default_rng(1)
  engine = Engine(model, EngineSettings(num_slots=slots))

  def length() -> int:
    return int(min(max_new, max(8, rng.lognormal(np.log(max_new / 4), 0.8))))

  def submit(prompt: list[int], n: int, stage: str, name: tuple, then) -> None:
    settings = SamplingSettings(max_new_tokens=length(), temperature=1.0)
    engine.submit(Request(prompt, settings, sample_key(0, *name), n=n, tag=stage, on_done=then))

  def instruction(count: int) -> list[int]:
    return rng.integers(100, vocab, count).tolist()

  def after_drafts(index: int):
    def then(request, drafts):
      for d, draft in enumerate(drafts):
        context = list(request.prompt) + draft
        submit(context + instruction(64), 2, "feedback", (index, d), after_feedback(context, (index, d)))

    return then

  def after_feedback(context: list[int], name: tuple):
    def then(request, feedbacks):
      for f, feedback in enumerate(feedbacks):
        submit(context + feedback + instruction(64), 1, "edit", (*name, f), None)

    return then

  start = time.perf_counter()
  for i in range(prompts):
    submit(instruction(int(rng.integers(64, 512))), 2, "draft", (i,), after_drafts(i))
  engine.run()
  return time.perf_counter() - start, engine.stats()


def main() -> None:
  args = parse_args(__doc__)
  from helpsteer_jax.models.create import create_sharded_model

  dev = device()
  config = llama8b_shape(args.tiny)
  model = create_sharded_model(config, None, seed=0)
  slots, prompts, max_new = (8, 4, 32) if args.tiny else (64, 16, 256)
  report = Report(args.out, "engine", f"The engine on a search-like workload ({dev.describe})")
  cold, _ = run_workload(model, slots, prompts, max_new, config.vocab_size)
  warm, stats = run_workload(model, slots, prompts, max_new, config.vocab_size)
  tokens = sum(s["tokens"] for s in stats["stages"].values())
  report.add(
    f"{config.num_layers} layers, {config.hidden_size} wide, bf16; {slots} slots, {prompts} prompts of "
    f"64-512 tokens, 2 drafts x 2 feedbacks x 1 edit each, lengths up to {max_new}.",
    "",
    f"First run (every compile included) {cold:.1f} s; second run {warm:.1f} s -> compile and "
    f"first-call cost {cold - warm:.1f} s. Second run: {tokens:,} tokens generated, "
    f"{tokens / warm:,.0f} tok/s overall, slot use {stats['slot_use']:.1%}, {stats['decode_steps']} "
    f"decode steps ({stats['tail_steps']} in the tail program); seconds "
    + ", ".join(f"{k} {v:.2f}" for k, v in stats["seconds"].items())
    + ".",
    "",
    "| stage | requests | samples | tokens | prefill tokens | reused prompt tokens | span s | tok/s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    *[
      f"| {tag} | {s['requests']} | {s['samples']} | {s['tokens']:,} | {s['prefill_tokens']:,} | "
      f"{s['reused_prompt_tokens']:,} | {s['seconds'] or 0:.2f} | {s['tokens_per_s'] or 0:,.0f} |"
      for tag, s in stats["stages"].items()
    ],
  )


if __name__ == "__main__":
  sys.exit(main())
