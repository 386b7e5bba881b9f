"""A reward-model selector scoring candidates with the conversation prefilled once, against batches.

    python experiments/benchmarks/select_prefill.py [--prompts=4] [--candidates=16] [--out=PATH]

The search scores its candidates one at a time (a score never depends on what it was batched
with: scaling/search.py). Measured in one run, on a reward model of SmolLM2-135M's shape (fp32,
random weights: the time does not depend on them) with the embedded SmolLM2 tokenizer:
`--candidates` answers to each of `--prompts` Arena-Hard questions (the bundled GPT-4 reference
answer cut at evenly spaced lengths, each opening with its own number so that candidates share
nothing after the conversation, as different drafts and edits do), its question asked after a first turn of another question and
its reference answer, so that the conversation is long as in a multi-turn prompt), each scored
  - in its own left-padded batch (`selector.shared_prefill=False`), and
  - through the chunked prefill, the conversation's chunks computed for the first candidate and
    copied for the others (`selector.shared_prefill=True`).
Each way runs first on other questions (compiling its programs), then on these with a new
selector (no chunk kept from the first pass). The report gives the prompt tokens computed, the
seconds per question and the largest score difference between the two.
Writes a Markdown table (default experiments/benchmarks/results/select_prefill.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from timing import cpu_name, write_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARENA = os.path.join(REPO, "helpsteer_jax", "data", "files", "eval", "arena-hard-v0.1")


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--candidates", type=int, default=16)
  parser.add_argument(
    "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "select_prefill.md")
  )
  args = parser.parse_args(argv)
  if args.prompts < 1 or args.candidates < 2:
    parser.error(f"--prompts={args.prompts} --candidates={args.candidates}; expected at least 1 and at least 2")
  return args


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def workloads(count: int, candidates: int, tokenizer) -> list[list[tuple[list[dict], str]]]:
  """`count` questions' (conversation, candidate) items: a first turn of the question before it."""
  questions = {q["uid"]: q["prompt"] for q in read_jsonl(os.path.join(ARENA, "question.jsonl"))}
  answers = {
    a["uid"]: a["messages"][-1]["content"]["answer"] for a in read_jsonl(os.path.join(ARENA, "gpt-4-0314.jsonl"))
  }
  uids = [u for u in questions if u in answers][: count + 1]
  out = []
  for first, uid in zip(uids, uids[1:]):
    conversation = [
      {"role": "user", "content": questions[first]},
      {"role": "assistant", "content": answers[first]},
      {"role": "user", "content": questions[uid]},
    ]
    ids = tokenizer.encode(answers[uid], add_special_tokens=False)
    cuts = np.linspace(len(ids) // 4, len(ids), candidates).astype(int)
    # Each candidate opens with its own number, so that no two share a token after the conversation.
    out.append([(conversation, f"({i + 1}) " + tokenizer.decode(ids[:cut])) for i, cut in enumerate(cuts)])
  return out


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  import jax
  from flax import nnx

  from helpsteer_jax.checkpoints.model_pool import ModelPool
  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.heads import RewardModel
  from helpsteer_jax.scoring.selectors import RewardModelSelector

  tokenizer = ModelPool().tokenizer("")
  model = RewardModel(get_preset("smollm2_135m"), rngs=nnx.Rngs(0))
  every = workloads(2 * args.prompts, args.candidates, tokenizer)
  warm, timed = every[args.prompts :], every[: args.prompts]
  results = {}
  for shared in (False, True):
    make = lambda: RewardModelSelector(model, tokenizer, prompt_format="plain", shared_prefill=shared)
    for items in warm:  # compiles this way's programs
      make().score(items[:2])
    selector = make()
    scores, seconds, tokens = [], 0.0, 0
    for items in timed:
      start = time.perf_counter()
      scores.append([selector.score([item])[0] for item in items])  # one call per candidate, as the search
      seconds += time.perf_counter() - start
      tokens += sum(len(selector.encode(c, r)) for c, r in items)
    computed = selector.prefill.counts.computed_tokens if shared else tokens
    results[shared] = (np.asarray(scores), seconds / len(timed), computed / len(timed), tokens / len(timed))
  batched, chunked = results[False], results[True]
  diff = float(np.max(np.abs(batched[0] - chunked[0])))
  lines = [
    "# Selection with the conversation prefilled once",
    "",
    f"CPU: {cpu_name()}, {os.cpu_count()} cores; JAX {jax.__version__}. A reward model of SmolLM2-135M's shape "
    f"(fp32, random weights); {args.prompts} Arena-Hard questions, each after a first turn, with "
    f"{args.candidates} candidates (its GPT-4 reference answer cut at evenly spaced lengths, each opening with its own number), scored one call "
    f"per candidate as the search does; each way compiled on other questions first. One run.",
    "",
    "| selector.shared_prefill | prompt tokens / question | tokens computed / question | seconds / question |",
    "|---|---:|---:|---:|",
    f"| False (left-padded batches) | {batched[3]:.0f} | {batched[2]:.0f} | {batched[1]:.2f} |",
    f"| True (chunked prefill) | {chunked[3]:.0f} | {chunked[2]:.0f} | {chunked[1]:.2f} |",
    "",
    f"Speed-up: {batched[1] / chunked[1]:.2f}x; tokens computed: {chunked[2] / batched[2]:.3f} of the batches'. "
    f"Largest score difference: {diff:.2e} (over {batched[0].size} scores).",
  ]
  write_report(args.out, lines)
  if diff > 1e-5:
    raise SystemExit(f"the scores differ by {diff:.2e}, more than 1e-5")


if __name__ == "__main__":
  main(sys.argv[1:])
