"""One RLOO iteration at SmolLM2-135M size on CPU, split into sampling, scoring and training time.

    python experiments/benchmarks/rloo_iteration.py [--prompts=2] [--samples=4] [--new_tokens=64]

The policy and the frozen reference are the embedded SmolLM2-135M-Instruct (fp32); the Edit RM is
a reward model on the same trunk (its head untrained: the cost, not the reward, is measured here).
Prompts are the bundled HelpSteer3 edit requests cut to `--prompt_tokens`. Each iteration runs the
trainer's own `prepare_batch` (rollouts with the project's sampler, RM scores, policy and reference
log-probs, advantages) and the jitted train step; the first iteration (compilation) is reported
apart. Writes a Markdown table (default experiments/benchmarks/results/rloo_iteration.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from timing import cpu_name, write_report


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--prompts", type=int, default=2)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--prompt_tokens", type=int, default=512)
  parser.add_argument("--iterations", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rloo_iteration.md"))
  args = parser.parse_args()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")

  import importlib.util

  import jax
  from flax import nnx

  from helpsteer_jax.checkpoints.embedded import embedded_model_path
  from helpsteer_jax.parallel.mesh import make_mesh
  from helpsteer_jax.parallel.partitioning import ShardingContext
  from helpsteer_jax.train.config import bundled_rows
  from helpsteer_jax.train.loop import to_global_batch
  from helpsteer_jax.train.optimizer import make_optimizer
  from helpsteer_jax.train.reward import reward_model_from_gguf
  from helpsteer_jax.train.rloo import RLOOTask
  from helpsteer_jax.train.state import init_state
  from helpsteer_jax.train.step import make_train_step

  path = os.path.join(os.path.dirname(__file__), "..", "edit_rloo.py")
  spec = importlib.util.spec_from_file_location("edit_rloo", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smollm2").unlock()
  config.rloo.reward_model = ""
  config.rloo.synthetic_reward = "low_token_fraction"  # replaced by the RM below
  config.rloo.num_samples = args.samples
  config.rloo.max_new_tokens = args.new_tokens
  config.rloo.max_prompt_tokens = args.prompt_tokens
  config.rloo.unfinished = "keep"
  config.rloo.reward_batch_size = args.prompts * args.samples
  config.data.batch_size = args.prompts
  config.data.path = bundled_rows("helpsteer3_edit.jsonl")  # no hub access needed
  config.data.drop_remainder = False
  config.progress = False
  # 8 rollouts of up to 1024 tokens keep ~29 GB of activations for the backward without remat:
  # recompute each layer in the backward instead (as a 24 GB host needs).
  config.model.overrides = {"remat_policy": "full"}

  sharding = ShardingContext(make_mesh((1, 1, 1), jax.devices()[:1]))
  task = RLOOTask(config)
  model = task.build_model(config, sharding)
  rm = reward_model_from_gguf(embedded_model_path(), 1, None, seed=0)
  task.use_reward_model(rm, task.tokenizer)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer, schedule = make_optimizer(config.optim, 100, params)
  state = init_state(params, optimizer)
  step = jax.jit(make_train_step(graphdef, rest, task.loss_fn(), optimizer, schedule), donate_argnums=(0,))
  prompts = task.train_data(0, 1)

  rows = []
  for i in range(args.iterations):
    started = time.perf_counter()
    batch, metrics, _ = task.prepare_batch(
      next(prompts), state, graphdef, rest, i, lambda x: to_global_batch(x, sharding)
    )
    prepared = time.perf_counter()
    state, out = step(state, batch, jax.random.key(0))
    jax.block_until_ready(out["loss"])
    train_s = time.perf_counter() - prepared
    total = time.perf_counter() - started
    rows.append(
      (metrics["sample_s"], metrics["score_s"], metrics["logprob_s"], train_s, total, int(batch["input_ids"].shape[1]))
    )
    print(
      f"iteration {i}: sample {rows[-1][0]:.2f} s, score {rows[-1][1]:.2f} s, log-probs "
      f"{rows[-1][2]:.2f} s, train step {train_s:.2f} s, total {total:.2f} s",
      flush=True,
    )

  steady = rows[1:] or rows
  mean = [sum(r[j] for r in steady) / len(steady) for j in range(5)]
  b = args.prompts * args.samples
  lines = [
    "# One RLOO iteration: SmolLM2-135M-Instruct policy, reference and RM, fp32, CPU",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}. "
    f"{args.prompts} edit prompts (cut to {args.prompt_tokens} tokens) x {args.samples} samples = {b} rollouts "
    f"of {args.new_tokens} new tokens; rows of {steady[-1][5]} tokens. Mean of iterations 2..{args.iterations}; "
    f"the first (with compilation) took {rows[0][4]:.1f} s.",
    "",
    "| part | seconds | share |",
    "|---|---:|---:|",
    f"| sampling (prefill + {args.new_tokens} decode steps, k samples share one prefill) | {mean[0]:.2f} | {mean[0] / mean[4]:.0%} |",
    f"| scoring (Edit RM forward) | {mean[1]:.2f} | {mean[1] / mean[4]:.0%} |",
    f"| log-probs (policy and frozen reference forwards, KL, advantages) | {mean[2]:.2f} | {mean[2] / mean[4]:.0%} |",
    f"| training (forward + backward with full remat + AdamW) | {mean[3]:.2f} | {mean[3] / mean[4]:.0%} |",
    f"| total, incl. host work | {mean[4]:.2f} | 100% |",
  ]
  write_report(args.out, lines)


if __name__ == "__main__":
  sys.exit(main())
