"""AlpacaEval 2: win rate against a baseline's outputs, raw and length-controlled.

Judging. For each instruction the judge sees the two outputs under the identifiers `m` and `M`,
in an order drawn per instruction from a seeded hash (so position bias averages out, and a rerun
shows the same order), and names the better one. With log-probabilities (OpenAI-compatible
`top_logprobs`) the preference is the judge's probability of the model's identifier as the first
token, normalised over the two identifiers, as AlpacaEval 2's weighted judge does; without them
the answer letter gives 0 or 1. A score judge gives `sigmoid(score_model - score_baseline)`.
Annotations are one JSON line per instruction:
    {"question_id", "instruction", "model", "baseline", "judge", "model_first", "judgment",
     "model_win_prob", "len_model", "len_baseline"}
where `model_win_prob` in [0, 1] (null = failed) is the probability the model's output is better.

Raw win rate: the mean of `model_win_prob`, in percent.

Length-controlled win rate: AlpacaEval 2's `length_controlled_v1` GLM (`eval/length_control.py`),
with AlpacaEval's published instruction difficulties and gamed-baseline rows
(`eval/alpaca_difficulty.py`). Without that table the result carries `lc_comparable: false` and
a note saying the number cannot be compared with the leaderboard. Lengths are in characters, as
in AlpacaEval. The interval is a bootstrap over instructions (with the cross-validated penalty
of the full fit); AlpacaEval's standard error is reported as well (`lc_standard_error`).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from helpsteer_jax.eval import length_control
from helpsteer_jax.eval.alpaca_difficulty import DifficultyTable
from helpsteer_jax.eval.judges.base import ChatRequest
from helpsteer_jax.eval.logistic import sigmoid

JUDGE_SYSTEM_PROMPT = (
  "You compare the outputs of AI models for a given instruction and pick the one a careful "
  "human reader would prefer: the more accurate, helpful and well-judged response."
)

PROMPT_TEMPLATE = """\
Here is an instruction and the outputs of two models, each labelled with an identifier.

## Instruction

{instruction}

## Output of model "m"

{output_m}

## Output of model "M"

{output_M}

## Your task

Decide which output better follows the instruction, taking correctness, helpfulness and \
relevance into account; do not prefer an output for its length or its position. Reply with the \
identifier of the better output and nothing else: either m or M."""


def model_first(question_id: str, seed: int) -> bool:
  """Whether the evaluated model's output is shown as `m` for this instruction (seeded hash)."""
  return zlib.crc32(f"{seed}:{question_id}".encode()) % 2 == 0


def judge_messages(instruction: str, output_m: str, output_M: str) -> list[dict[str, str]]:
  return [
    {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
    {"role": "user", "content": PROMPT_TEMPLATE.format(instruction=instruction, output_m=output_m, output_M=output_M)},
  ]


def _identifier(token: str) -> Optional[str]:
  token = token.strip().strip("\"'`*.:()[]")
  return token if token in ("m", "M") else None


def parse_preference(text: str, top_logprobs: Optional[list[dict[str, float]]], model_is_m: bool) -> Optional[float]:
  """P(the model's output is better) from the judge's reply; None when it named neither."""
  if top_logprobs:
    mass = {"m": 0.0, "M": 0.0}
    for token, logprob in top_logprobs[0].items():
      ident = _identifier(token)
      if ident is not None:
        mass[ident] += math.exp(logprob)
    total = mass["m"] + mass["M"]
    if total > 0:
      return (mass["m"] if model_is_m else mass["M"]) / total
  match = re.match(r"\W*(m|M)(?![A-Za-z])", (text or "").strip())
  if match is None:
    match = re.search(r"(?:output|model|identifier)\W{0,3}\b(m|M)\b(?![A-Za-z])", text or "")
  if match is None:
    return None
  return float((match.group(1) == "m") == model_is_m)


def judge_with_chat(
  judge,
  items: Sequence[tuple[str, str, str, str]],
  model: str,
  baseline: str,
  seed: int = 0,
  max_tokens: int = 8,
  top_logprobs: int = 5,
) -> list[dict[str, Any]]:
  """items: (question_id, instruction, model output, baseline output) -> annotation records."""
  requests, orders = [], []
  for qid, instruction, output, base in items:
    first = model_first(qid, seed)
    orders.append(first)
    pair = (output, base) if first else (base, output)
    requests.append(ChatRequest.of(judge_messages(instruction, *pair), 0.0, max_tokens, top_logprobs))
  replies = judge.chat(requests)
  return [
    _record(
      qid,
      instruction,
      output,
      base,
      model,
      baseline,
      judge.name,
      first,
      reply.text,
      parse_preference(reply.text, reply.top_logprobs, first),
    )
    for (qid, instruction, output, base), first, reply in zip(items, orders, replies)
  ]


def judge_with_scores(
  judge, items: Sequence[tuple[str, str, str, str]], model: str, baseline: str
) -> list[dict[str, Any]]:
  """Annotations from a score judge: P(model better) = sigmoid(score difference)."""
  convs = [[{"role": "user", "content": instruction}] for _, instruction, _, _ in items]
  scores = judge.score(convs + convs, [i[2] for i in items] + [i[3] for i in items])
  n = len(items)
  return [
    _record(
      qid,
      instruction,
      output,
      base,
      model,
      baseline,
      judge.name,
      True,
      f"score judge {judge.name}: model {scores[k]:.4f}, baseline {scores[n + k]:.4f}",
      float(sigmoid(scores[k] - scores[n + k])),
    )
    for k, (qid, instruction, output, base) in enumerate(items)
  ]


def _record(qid, instruction, output, base, model, baseline, judge, first, judgment, prob) -> dict[str, Any]:
  return {
    "question_id": qid,
    "instruction": instruction,
    "model": model,
    "baseline": baseline,
    "judge": judge,
    "model_first": first,
    "judgment": judgment,
    "model_win_prob": prob,
    "len_model": len(output),
    "len_baseline": len(base),
  }


# -- scoring --------------------------------------------------------------------------------------


def win_rates(
  annotations: Sequence[Mapping[str, Any]],
  table: Optional[DifficultyTable] = None,
  rounds: int = 100,
  seed: int = 42,
  table_note: str = "",
) -> dict[str, Any]:
  """Raw and length-controlled win rates (%) with 95% bootstrap intervals, for one model.

  `table`: AlpacaEval's difficulty table (None: the LC number is flagged as not comparable, with
  `table_note` saying why). Question ids must be AlpacaEval's instruction indices ("0" ... "804").
  """
  if not annotations:
    raise ValueError("no annotations to score")
  valid = [a for a in annotations if a.get("model_win_prob") is not None]
  if not valid:
    raise ValueError("no usable annotation: the judge named neither output on every instruction")
  p = np.array([float(a["model_win_prob"]) for a in valid])
  n_all = len(annotations)
  prob_all = np.array([np.nan if a.get("model_win_prob") is None else float(a["model_win_prob"]) for a in annotations])
  lens_model = np.array([float(a["len_model"]) for a in annotations])
  lens_base = np.array([float(a["len_baseline"]) for a in annotations])
  qids = [str(a["question_id"]) for a in annotations]
  lc = length_control.length_controlled(prob_all, lens_model, lens_base, qids, table)
  n = len(valid)
  raw = float(p.mean())
  rng = np.random.default_rng(seed)
  raw_boot, lc_boot = [], []
  valid_mask = ~np.isnan(prob_all)
  for _ in range(rounds):
    counts = np.bincount(rng.integers(0, n_all, n_all), minlength=n_all).astype(np.float64)
    raw_boot.append(float(np.sum(counts[valid_mask] * p) / max(np.sum(counts[valid_mask]), 1.0)))
    lc_boot.append(length_control.fit_length_controlled(lc.design, lc.c, counts)[1])
  ci = lambda xs, v: (np.percentile(xs, [2.5, 97.5]) if rounds else np.array([v, v])) * 100
  raw_lo, raw_hi = ci(raw_boot, raw)
  lc_lo, lc_hi = ci(lc_boot, lc.win_rate / 100)
  out = {
    "win_rate": 100 * raw,
    "win_rate_ci_low": float(raw_lo),
    "win_rate_ci_high": float(raw_hi),
    "win_rate_se": float(100 * p.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
    "lc_win_rate": lc.win_rate,
    "lc_ci_low": float(lc_lo),
    "lc_ci_high": float(lc_hi),
    "lc_standard_error": lc.standard_error,
    "lc_glm": lc.glm,
    "lc_coef": lc.coef,
    "lc_c": lc.c,
    "lc_comparable": lc.comparable,
    "lc_difficulty_source": table.source if table is not None else None,
    "num_annotations": n_all,
    "failed": n_all - n,
    "mean_len_model": float(np.mean([a["len_model"] for a in valid])),
    "mean_len_baseline": float(np.mean([a["len_baseline"] for a in valid])),
    "bootstrap_rounds": rounds,
  }
  if not lc.comparable:
    out["lc_note"] = "not comparable to the AlpacaEval leaderboard: no instruction-difficulty table" + (
      f" ({table_note})" if table_note else ""
    )
  return out
