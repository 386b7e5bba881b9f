"""The decode engine and the search at two revisions of this repository, alternating in one run.

    python experiments/benchmarks/compare_revisions.py --base=REV [--rounds=3] [--prompts=2]

For a change meant to keep the speed (a restructuring), on the embedded SmolLM2-135M-Instruct
(fp32, CPU): the base revision is checked out into a temporary git worktree, and each round runs,
for the base and then the working tree, each in a new process that imports that tree's package:
  1. decode: an engine of `--slots` slots over `--requests` sampled requests of `--new_tokens`
     tokens (no stop token), timed after a first run that compiles its programs;
  2. search: the README demo config on `--prompts` Arena-Hard prompts
     (search_throughput.py --search_only), with each tree's own compilation cache warmed first.
A shared CPU drifts by 10-30% over minutes, so the report gives each round's ratio (working tree /
base) and their median, and checks that both trees generated the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from timing import cpu_name, write_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DECODE_WORKER = r"""
import json, sys, time
import numpy as np
import helpsteer_jax as hj
from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.settings import SamplingSettings

slots, requests, new_tokens = map(int, sys.argv[1:4])
model, _ = hj.load_pretrained("embedded")
prompts = np.random.default_rng(0).integers(100, 40000, size=(requests, 32)).tolist()
settings = SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, top_p=0.95)

def once():
  engine = Engine(model, EngineSettings(num_slots=slots))
  batch = [Request(p, settings, sample_key(0, i)) for i, p in enumerate(prompts)]
  for r in batch:
    engine.submit(r)
  start = time.perf_counter()
  engine.run()
  return time.perf_counter() - start, [r.results for r in batch]

once()  # compiles
seconds, results = once()
print(json.dumps({"seconds": seconds, "tokens": sum(len(s) for r in results for s in r),
                  "digest": hash(json.dumps(results)) & 0xFFFFFFFF, "package": hj.__file__}))
"""


def _run(tree: str, command: list[str]) -> dict:
  env = dict(os.environ, PYTHONPATH=tree, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONHASHSEED="0")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f"{' '.join(command)} in {tree} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def decode(tree: str, args) -> dict:
  result = _run(tree, [sys.executable, "-c", DECODE_WORKER, str(args.slots), str(args.requests), str(args.new_tokens)])
  if not result["package"].startswith(tree):
    raise RuntimeError(f"{tree} imported the package from {result['package']}")
  return result


def search(tree: str, cache: str, args) -> dict:
  script = os.path.join(tree, "experiments", "benchmarks", "search_throughput.py")
  return _run(tree, [sys.executable, script, f"--prompts={args.prompts}", f"--search_only={cache}"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", required=True, help="a git revision to compare the working tree with")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--slots", type=int, default=16)
  parser.add_argument("--requests", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--prompts", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "compare_revisions.md"))
  args = parser.parse_args()

  scratch = tempfile.mkdtemp(prefix="compare_revisions_")
  base_tree = os.path.join(scratch, "base")
  subprocess.run(
    ["git", "-C", REPO, "worktree", "add", "--detach", base_tree, args.base], check=True, capture_output=True
  )
  base_rev = subprocess.run(
    ["git", "-C", base_tree, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
  ).stdout.strip()
  trees = {"base": base_tree, "working tree": REPO}
  caches = {name: os.path.join(scratch, f"xla_{i}") for i, name in enumerate(trees)}
  rows = []
  try:
    for name, tree in trees.items():
      search(tree, caches[name], args)  # fills its compilation cache
    for round_ in range(args.rounds):
      got = {name: (decode(tree, args), search(tree, caches[name], args)) for name, tree in trees.items()}
      (bd, bs), (wd, ws) = got["base"], got["working tree"]
      if bd["digest"] != wd["digest"] or bs["tokens"] != ws["tokens"]:
        raise RuntimeError(f"the trees generated different tokens: {got}")
      rows.append(
        (round_ + 1, bd["tokens"] / bd["seconds"], wd["tokens"] / wd["seconds"], bs["seconds"], ws["seconds"])
      )
      print(rows[-1], flush=True)
  finally:
    subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base_tree], capture_output=True)
    shutil.rmtree(scratch, ignore_errors=True)

  decode_ratio = statistics.median(w / b for _, b, w, _, _ in rows)
  search_ratio = statistics.median(b / w for _, _, _, b, w in rows)
  lines = [
    f"# The working tree against {args.base} ({base_rev}): decode engine and search",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores. Decode: {args.slots} slots, {args.requests} "
    f"sampled requests x {args.new_tokens} tokens. Search: README demo config on {args.prompts} "
    "prompts, programs loaded from each tree's compilation cache. Both trees generated the same "
    "tokens in every round.",
    "",
    "| round | decode tok/s, base | decode tok/s, working tree | search s, base | search s, working tree |",
    "|---:|---:|---:|---:|---:|",
    *[f"| {r} | {bd:.1f} | {wd:.1f} | {bs:.1f} | {ws:.1f} |" for r, bd, wd, bs, ws in rows],
    "",
    f"Median speed ratio, working tree / base: decode **{decode_ratio:.3f}**, search **{search_ratio:.3f}**.",
  ]
  write_report(args.out, lines)


if __name__ == "__main__":
  sys.exit(main())
