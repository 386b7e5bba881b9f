"""The default evaluation config; experiment files under experiments/eval/ start from it.

Every field that decides a number in a table lives here (none in shell scripts), and experiment
files lock the config, so a misspelled command-line override fails instead of being ignored.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ml_collections import ConfigDict

from helpsteer_jax.data.run_identity import RESUME_MODES
from helpsteer_jax.eval.results import BENCHMARKS
from helpsteer_jax.parallel.mesh_config import mesh_config

JUDGE_KINDS = ("http", "generative", "reward_model")

# Per benchmark: the baseline, and the judge's sampling as the benchmark's reference setup uses it.
_BENCHMARK_DEFAULTS = {
  "arena_hard": {
    "baseline": "gpt-4-0314",
    "judge_model": "gpt-4-1106-preview",
    "judge_max_tokens": 4096,
    "answer_tokens": 4096,
  },
  "mt_bench": {"baseline": "", "judge_model": "gpt-4", "judge_max_tokens": 2048, "answer_tokens": 1024},
  "alpaca_eval": {
    "baseline": "gpt4_1106_preview",
    "judge_model": "gpt-4-1106-preview",
    "judge_max_tokens": 8,
    "answer_tokens": 2048,
  },
}


def default_config(benchmark: str) -> ConfigDict:
  if benchmark not in BENCHMARKS:
    raise ValueError(f"benchmark={benchmark!r}; expected one of {BENCHMARKS}")
  d = _BENCHMARK_DEFAULTS[benchmark]
  config = ConfigDict()
  config.benchmark = benchmark
  # the table row this run fills ("<policy>:<variant>", eval/tables.py; "gpt-4o" for an external
  # model); "" = the scaling run's own label (its config.label), else the model name
  config.label = ""
  config.model = ConfigDict(
    {
      "name": "",  # recorded in judgments and results; "" = derived from the path or answer file
      "path": "",  # HF folder or .gguf; "" = the embedded SmolLM2-135M-Instruct
      "param_dtype": "",
      # Evaluate existing answers instead of generating: an answers file (this project's,
      # arena-hard-auto's, FastChat's or AlpacaEval's layout) or a scaling-search output folder.
      "answers": "",
    }
  )
  config.generation = ConfigDict(
    {
      "max_new_tokens": d["answer_tokens"],
      "temperature": 0.0,  # arena_hard / alpaca_eval; MT-Bench uses its per-category temperatures
      "top_p": 1.0,  # 1.0 = no nucleus truncation
      "batch_size": 16,
      "seed": 0,
      "system_prompt": "",
    }
  )
  config.questions = ConfigDict({"path": "", "start": 0, "limit": 0})  # path "" = bundled / download
  config.baseline = ConfigDict({"name": d["baseline"], "path": ""})
  config.references_path = ""  # MT-Bench reference answers; "" = bundled / download
  config.judge_prompts_path = ""  # MT-Bench judge prompts; "" = bundled / download
  config.judge = ConfigDict(
    {
      "kind": "http",  # http | generative | reward_model
      # http: any OpenAI-compatible endpoint; the key is read from the variable named here.
      "base_url": "https://api.openai.com/v1",
      "model": d["judge_model"],
      "api_key_env": "OPENAI_API_KEY",
      "timeout_s": 120.0,
      "max_retries": 6,
      "backoff_s": 1.0,
      "max_backoff_s": 60.0,
      "max_workers": 8,
      "temperature": 0.0,
      "max_tokens": d["judge_max_tokens"],
      "cache_path": "",  # "" = <workdir>/judge_cache.jsonl; point several runs at one file to share
      # generative / reward_model: a local model. generative: an instruct model ("" = the answer
      # model). reward_model: a reward-model folder, or "" = the answer model's 0-4 digit judgment.
      "path": "",
      "param_dtype": "",
      "batch_size": 8,
      # reward_model on Arena-Hard: score differences -> verdicts (they depend on the RM's scale).
      "tie_margin": 0.1,
      "strong_margin": 1.0,
    }
  )
  config.scoring = ConfigDict({"bootstrap_rounds": 100, "seed": 42, "style_control": False})
  config.alpaca = ConfigDict(
    {
      "order_seed": 0,  # which output the judge sees first, per instruction
      "top_logprobs": 5,  # 0 = ask for the letter only
      # AlpacaEval's instruction-difficulty table (df_gamed.csv) for the length-controlled GLM:
      # "" = the published one, downloaded once from the hub and cached. Without it (offline, no
      # cache) the LC win rate is flagged as not comparable to the leaderboard.
      "difficulty_file": "",
    }
  )
  config.questions_per_batch = 16  # answered / judged, then appended to disk
  config.mesh = mesh_config((1, 1, 1))  # for the local models: shape (data, fsdp, tensor), rules
  config.distributed = ConfigDict({"mode": "auto"})
  config.output_dir = f"outputs/eval/{benchmark}/default"
  # check: a rerun into a workdir holding another run's work (another model, other sampling
  # values, another question file) is refused, naming each differing field; force: continue.
  config.resume = "check"
  return config


def tiny_overrides(config: ConfigDict, limit: int = 3) -> ConfigDict:
  """CPU scale: the embedded model answers a few questions briefly and judges them itself, by
  its expected 0-4 helpfulness digit (one forward pass per answer, and always a usable verdict,
  which a 135M model's free-text judgments seldom give)."""
  config.questions.limit = limit
  config.generation.max_new_tokens = 48
  config.generation.batch_size = 4
  config.judge.kind = "reward_model"
  config.judge.path = ""
  config.judge.max_tokens = 96 if config.benchmark != "alpaca_eval" else 4
  config.scoring.bootstrap_rounds = 20
  config.questions_per_batch = 4
  return config


# (field, test, what the field must be): the numeric values with a valid range. A value out of
# range fails when the run starts, before any model loads, instead of deep inside a judge call
# (a negative `max_retries` made the HTTP judge report "failed 0 times").
_Check = tuple[str, Callable[[Any], bool], str]
_CHECKS: tuple[_Check, ...] = (
  ("generation.max_new_tokens", lambda v: v >= 1, "at least 1"),
  ("generation.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
  ("generation.top_p", lambda v: 0 < v <= 1, "in (0, 1] (1 = no nucleus truncation)"),
  ("generation.top_k", lambda v: v >= 0, ">= 0 (0 = no top-k truncation)"),
  ("generation.batch_size", lambda v: v >= 1, "at least 1"),
  ("questions.start", lambda v: v >= 0, ">= 0"),
  ("questions.limit", lambda v: v >= 0, ">= 0 (0 = all)"),
  ("questions_per_batch", lambda v: v >= 1, "at least 1"),
  ("judge.timeout_s", lambda v: v > 0, "> 0 seconds"),
  ("judge.max_retries", lambda v: v >= 0, ">= 0 (0 = one attempt, no retry)"),
  ("judge.backoff_s", lambda v: v >= 0, ">= 0 seconds"),
  ("judge.max_backoff_s", lambda v: v >= 0, ">= 0 seconds"),
  ("judge.max_workers", lambda v: v >= 1, "at least 1 (concurrent judge calls)"),
  ("judge.temperature", lambda v: v >= 0, ">= 0"),
  ("judge.max_tokens", lambda v: v >= 1, "at least 1"),
  ("judge.batch_size", lambda v: v >= 1, "at least 1"),
  ("judge.tie_margin", lambda v: v >= 0, ">= 0"),
  ("scoring.bootstrap_rounds", lambda v: v >= 0, ">= 0 (0 = no confidence interval)"),
  ("alpaca.top_logprobs", lambda v: 0 <= v <= 20, "in [0, 20] (0 = ask for the letter only)"),
)


def _value(config: ConfigDict, name: str) -> Any:
  """The value of dotted field `name`, or None when the config has no such field (or it is None)."""
  node: Any = config
  for part in name.split("."):
    if not isinstance(node, ConfigDict) or part not in node:
      return None
    node = node[part]
  return node


def _in_range(test: Callable[[Any], bool], value: Any) -> bool:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  return not (isinstance(value, float) and math.isnan(value)) and test(value)


def check_config(config: ConfigDict) -> None:
  """Raises ValueError naming the field and its value for every value out of range (all of them
  in one message), so a mistyped override fails before any model loads or judge call."""
  problems = []
  for name, test, expected in _CHECKS:
    value = _value(config, name)
    if value is not None and not _in_range(test, value):
      problems.append(f"{name}={value!r}: must be {expected}")
  tie, strong = _value(config, "judge.tie_margin"), _value(config, "judge.strong_margin")
  if strong is not None and not _in_range(lambda v: v >= (tie or 0), strong):
    problems.append(f"judge.strong_margin={strong!r}: must be >= judge.tie_margin ({tie!r})")
  kind = _value(config, "judge.kind")
  if kind is not None and kind not in JUDGE_KINDS:
    problems.append(f"judge.kind={kind!r}: must be one of {JUDGE_KINDS}")
  resume = _value(config, "resume")
  if resume is not None and resume not in RESUME_MODES:
    problems.append(f"resume={resume!r}: must be one of {RESUME_MODES}")
  if problems:
    raise ValueError("invalid evaluation config:\n  " + "\n  ".join(problems))
