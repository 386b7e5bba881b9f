"""The server against the in-process engine: requests/s and tokens/s at 1, 8 and 32 concurrent clients.

    python experiments/benchmarks/serve_throughput.py [--requests=32] [--max_tokens=32] [--slots=16]

On the embedded SmolLM2-135M-Instruct (CPU): `python -m helpsteer_jax.serve` is started on
127.0.0.1 and `--requests` sampled chat requests (one seed each) are sent by C client threads of
the official `openai` client, for C in 1, 8, 32 (a first round compiles). In the same run the same
requests are decoded in-process by an engine of the same slots, each concurrency level submitting C
at a time, so the ratio is what HTTP, JSON and the server's thread hand-offs cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from timing import cpu_name, write_report

CONCURRENCY = (1, 8, 32)


def _conversations(count: int) -> list[list[dict[str, str]]]:
  topics = ["rivers", "bread", "chess", "rain", "bridges", "owls", "clocks", "salt"]
  return [
    [{"role": "user", "content": f"Write two sentences about {topics[i % len(topics)]} ({i})."}] for i in range(count)
  ]


def _served(base_url: str, conversations, max_tokens: int, concurrency: int) -> tuple[float, int]:
  import openai

  client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
  tokens = [0] * len(conversations)
  next_index = iter(range(len(conversations)))
  lock = threading.Lock()

  def worker():
    while True:
      with lock:
        i = next(next_index, None)
      if i is None:
        return
      reply = client.chat.completions.create(
        model="embedded", messages=conversations[i], max_tokens=max_tokens, temperature=1.0, seed=i
      )
      tokens[i] = reply.usage.completion_tokens

  start = time.perf_counter()
  threads = [threading.Thread(target=worker) for _ in range(concurrency)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return time.perf_counter() - start, sum(tokens)


def _in_process(model, tokenizer, conversations, max_tokens: int, concurrency: int, slots: int) -> tuple[float, int]:
  from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
  from helpsteer_jax.sampling.generate import encode_conversations, sampling_settings
  from helpsteer_jax.sampling.keys import sample_key

  base = sampling_settings(tokenizer, max_new_tokens=max_tokens, temperature=1.0)
  engine = Engine(model, EngineSettings(num_slots=slots, stop_token_ids=base.stop_token_ids, pad_id=base.pad_id))
  prompts = encode_conversations(tokenizer, conversations)
  requests = [Request(p, base, sample_key(i, 0)) for i, p in enumerate(prompts)]
  start = time.perf_counter()
  waiting = list(requests)
  open_requests: list = []
  while waiting or engine.busy:
    open_requests = [r for r in open_requests if not r.complete]
    while waiting and len(open_requests) < concurrency:  # C clients: a new request as one finishes
      engine.submit(waiting[0])
      open_requests.append(waiting.pop(0))
    engine.step()
  return time.perf_counter() - start, sum(len(s) for r in requests for s in r.results)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--requests", type=int, default=32)
  parser.add_argument("--max_tokens", type=int, default=32)
  parser.add_argument("--slots", type=int, default=16)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "serve_throughput.md"))
  args = parser.parse_args()

  import helpsteer_jax as hj
  from helpsteer_jax.testing.served import running_server

  conversations = _conversations(args.requests)
  model, tokenizer = hj.load_pretrained("embedded", show_progress=False)
  env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  rows = []
  with running_server("--model=embedded", f"--num_slots={args.slots}", "--max_open_requests=256", env=env) as server:
    _served(server.base_url, conversations[:8], args.max_tokens, 8)  # compiles the server's programs
    _in_process(model, tokenizer, conversations[:8], args.max_tokens, 8, args.slots)  # and the in-process ones
    for concurrency in CONCURRENCY:
      served_s, served_tokens = _served(server.base_url, conversations, args.max_tokens, concurrency)
      local_s, local_tokens = _in_process(model, tokenizer, conversations, args.max_tokens, concurrency, args.slots)
      rows.append((concurrency, served_s, served_tokens, local_s, local_tokens))
      print(rows[-1], flush=True)
  lines = [
    "# The server against the in-process engine",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores. Embedded SmolLM2-135M-Instruct (fp32), {args.slots} slots, "
    f"{args.requests} sampled chat requests of at most {args.max_tokens} tokens (seed = request index), "
    "sent by C client threads (`openai` client) or submitted C at a time in-process; one run.",
    "",
    "| clients | served req/s | served tok/s | in-process req/s | in-process tok/s | served / in-process tok/s |",
    "|---:|---:|---:|---:|---:|---:|",
    *[
      f"| {c} | {args.requests / ss:.2f} | {st / ss:.1f} | {args.requests / ls:.2f} | {lt / ls:.1f} | "
      f"{(st / ss) / (lt / ls):.2f} |"
      for c, ss, st, ls, lt in rows
    ],
  ]
  write_report(args.out, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
