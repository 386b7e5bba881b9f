"""Search results on disk: one JSON line per prompt, appended as it finishes.

`results.jsonl` is flushed and fsynced after every batch, so a crash loses at most the batch in
flight and a rerun skips every prompt already there. `summary.json` and the distillation set
(`distill.jsonl`: the conversation plus the chosen answer, in chat-messages form for SFT) are
rebuilt from `results.jsonl` at the end of each run. The folder may be local or a bucket URL
(`helpsteer_jax.storage`); in a bucket `results.jsonl` is an append log of one object per batch,
compacted into one object when the run finishes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from typing import Any

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl
from helpsteer_jax.scaling.search_settings import TOKEN_ACCOUNTS
from helpsteer_jax.scaling.tree import counted_tokens
from helpsteer_jax.storage import object_log

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
DISTILL = "distill.jsonl"


def read_records(out_dir: str) -> list[dict[str, Any]]:
  path = storage.join(out_dir, RESULTS)
  # In a bucket the log may be parts only, with no object at `path` itself.
  return read_jsonl(path, torn_tail_ok=True) if object_log.log_exists(path) else []


def unique_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The first record of each prompt id, in file order: a prompt written twice (two runs that
  shared a folder before it was locked) counts once in the summary and the distillation set."""
  seen: set[str] = set()
  out = []
  for r in records:
    if str(r["id"]) not in seen:
      seen.add(str(r["id"]))
      out.append(r)
  return out


class ResultWriter:
  def __init__(self, out_dir: str):
    self.out_dir = out_dir
    storage.makedirs(out_dir)
    self.path = storage.join(out_dir, RESULTS)
    self._log = JsonlAppender(self.path)  # cuts off a line a crash left half-written

  def done_ids(self) -> set[str]:
    return {str(r["id"]) for r in read_records(self.out_dir)}

  def append(self, records: Iterable[dict[str, Any]]) -> None:
    self._log.append(records)

  def finalize(self, run_info: dict[str, Any]) -> dict[str, Any]:
    self._log.compact()  # a finished run's log as one object in a bucket (a no-op on disk)
    return write_summary_files(self.out_dir, run_info, unique_records(read_records(self.out_dir)))


def write_summary_files(out_dir: str, run_info: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
  """`summary.json` (`run_info` and the figures of `records`) and `distill.jsonl`, each replaced
  whole; returns the summary."""
  search = (run_info.get("config") or {}).get("search") or {}
  # Runs from before the choice counted every generated token.
  summary = dict(run_info, **summarize(records, search.get("token_account", "generated")))
  storage.write_atomic(storage.join(out_dir, SUMMARY), json.dumps(summary, indent=2))
  write_distillation(records, storage.join(out_dir, DISTILL))
  return summary


def write_records(records: list[dict[str, Any]], path: str) -> None:
  """`records` as the whole of the JSONL file `path`, replaced only once written and synced."""
  _replace_jsonl(records, path)


def summarize(records: list[dict[str, Any]], token_account: str = "responses") -> dict[str, Any]:
  """Run-level figures. `token_multiple` is a ratio of sums, the tokens the run's token account
  counts (search.token_account) over all greedy tokens, over the prompts that have a greedy
  answer: a mean of per-prompt ratios (kept as `mean_token_multiple_per_prompt`) lets one very
  short greedy answer dominate. `token_multiples` has the ratio under every account."""
  if not records:
    return {"num_prompts": 0}
  mean = lambda xs: statistics.fmean(xs) if xs else None
  multiples = [r["token_multiple"] for r in records if r.get("token_multiple")]
  measured = [r for r in records if r["tokens"].get("greedy")]
  greedy_total = sum(r["tokens"]["greedy"] for r in measured)
  best_scores = [r["best"]["score"] for r in records if r["best"].get("score") is not None]
  draft_scores = [d["score"] for r in records for d in r["drafts"] if d.get("score") is not None]
  chose_edit = sum(1 for r in records if r["best"].get("edit") is not None)
  kept = [f["kept"] for r in records for d in r["drafts"] for f in d["feedbacks"]]
  tokens = {k: sum(r["tokens"][k] for r in records) for k in ("drafts", "feedback", "edits", "total")}
  tokens["greedy"] = greedy_total
  multiples_by_account = {
    account: (sum(counted_tokens(r["tokens"], account) for r in measured) / greedy_total if greedy_total else None)
    for account in TOKEN_ACCOUNTS
  }
  effective = [r["effective_feedbacks"] for r in records if r.get("effective_feedbacks")]
  return {
    "num_prompts": len(records),
    "token_multiple": multiples_by_account[token_account],
    "token_account": token_account,
    "token_multiples": multiples_by_account,
    "mean_token_multiple_per_prompt": mean(multiples),
    "mean_best_score": mean(best_scores),
    "mean_draft_score": mean(draft_scores),
    "best_is_an_edit": chose_edit / len(records),
    "feedback_kept_fraction": mean([float(k) for k in kept]),
    "mean_effective_feedbacks_per_draft": mean([n for e in effective for n in e["per_draft"]]),
    "mean_effective_feedbacks_per_prompt": mean([e["total"] for e in effective]),
    "mean_candidates": mean([r["num_candidates"] for r in records]),
    "tokens": tokens,
  }


def write_distillation(records: list[dict[str, Any]], path: str) -> None:
  _replace_jsonl(
    (
      {"id": r["id"], "messages": list(r["conversation"]) + [{"role": "assistant", "content": r["best"]["text"]}]}
      for r in records
    ),
    path,
  )


def _replace_jsonl(rows: Iterable[dict[str, Any]], path: str) -> None:
  storage.write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
