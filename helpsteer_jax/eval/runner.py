"""`run_evaluation(config, workdir)`: answers, judgments and the result file of one benchmark run.

Order of work, each step resumable:
1. questions (bundled data when present, the public source otherwise);
2. answers: read from `config.model.answers`, or generated with the project's sampler and
   appended to `<workdir>/answers.jsonl` batch by batch (a rerun answers only what is missing);
3. judgments: appended to `<workdir>/judgments.jsonl` batch by batch, each judge call also kept in
   the judge cache (a rerun repeats no judge call that gave a verdict); judgments by another judge in the same file
   are left there and ignored, so switching judges never mixes their verdicts;
4. scoring, and `<workdir>/eval_result.json` (format in `eval/results.py`).
The config's values are checked before anything runs (`eval/config.check_config`), and the workdir
records what produced it (`run_identity.json`: the config, the answer model's fingerprint or the
answer file's, the question file's, the judge's): a rerun that would mix another model's answers,
other sampling values or another question set into it is refused before any model loads
(`resume="force"` continues anyway). A judgment without a usable verdict is judged again on a
rerun, neither replayed from the judge cache nor kept as done.
With several processes (a multi-host mesh) every process generates and scores, process 0 alone
writes files and calls an HTTP judge; the workdir must then be on a shared file system or in a
bucket (gs://...), as every path here may be (`helpsteer_jax.storage`).
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any, Optional

from ml_collections import ConfigDict
from tqdm.auto import tqdm

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.identity import model_identity
from helpsteer_jax.checkpoints.model_pool import ModelPool, resolve_path
from helpsteer_jax.data.jsonl import JsonlAppender
from helpsteer_jax.data.run_folder import claim_run_folder
from helpsteer_jax.data.run_identity import (
  FieldRules,
  RunIdentity,
  check_and_record,
  check_rerun,
  identity_file,
  json_values,
  read_identity,
)
from helpsteer_jax.eval import alpaca_difficulty, alpaca_eval, arena_hard, mt_bench, sources
from helpsteer_jax.eval.answers import AnswerSet, generate_answers, make_generate_fn, missing_answers, read_answers
from helpsteer_jax.eval.config import JUDGE_KINDS, check_config
from helpsteer_jax.eval.judges.base import ChatReply
from helpsteer_jax.eval.judges.cache import CachedChatJudge, JudgeCache
from helpsteer_jax.eval.judges.http_judge import HttpJudge, HttpJudgeSettings
from helpsteer_jax.eval.judges.local_judge import GenerativeJudge, RewardModelJudge
from helpsteer_jax.eval.results import ANSWERS_FILE, JUDGMENTS_FILE, make_result, write_result
from helpsteer_jax.storage import object_log
from helpsteer_jax.storage.fingerprints import file_fingerprint, text_fingerprint

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
MT_BENCH_TABLE = "mt_bench_table.md"
JUDGE_CACHE_FILE = "judge_cache.jsonl"


def _is_writer() -> bool:
  import jax

  return jax.process_index() == 0


def model_name(config: ConfigDict) -> str:
  if config.model.name:
    return config.model.name
  if not config.model.path:
    return EMBEDDED_NAME
  return os.path.splitext(os.path.basename(os.path.normpath(config.model.path)))[0]


# -- questions and answers ----------------------------------------------------------------------


def load_questions(config: ConfigDict) -> tuple[list[sources.Question], dict[str, str], str]:
  """(questions, baseline answers by id, baseline name) of the configured benchmark."""
  q, b = config.questions, config.baseline
  if config.benchmark == "arena_hard":
    return (sources.arena_hard_questions(q.path, q.start, q.limit), sources.arena_hard_baseline(b.name, b.path), b.name)
  if config.benchmark == "mt_bench":
    return sources.mt_bench_questions(q.path, q.start, q.limit), {}, ""
  questions, baseline, generator = sources.alpaca_eval_set(b.path or q.path, q.start, q.limit)
  return questions, baseline, b.name or generator


def obtain_answers(
  config: ConfigDict, workdir: str, questions: Sequence[sources.Question], models: ModelPool
) -> AnswerSet:
  turns_needed = 2 if config.benchmark == "mt_bench" else 1
  if config.model.answers:
    answers = read_answers(config.model.answers, questions, config.model.name)
    missing = missing_answers(answers, questions, turns_needed)
    if missing:
      raise ValueError(
        f"{config.model.answers}: no {turns_needed}-turn answer for {len(missing)} questions (first: {missing[:5]})"
      )
    return answers
  name = model_name(config)
  log = JsonlAppender(storage.join(workdir, ANSWERS_FILE))
  done = {str(r["question_id"]): r for r in log.read() if r.get("model") == name}
  todo = [q for q in questions if q.id not in done]
  logging.info("%d questions, %d already answered in %s", len(questions), len(questions) - len(todo), log.path)
  if todo:
    g = config.generation
    model, tokenizer = models.causal_lm(config.model.path, config.model.param_dtype)
    generate = make_generate_fn(model, tokenizer, g.max_new_tokens, g.top_p if g.top_p < 1.0 else None, g.batch_size)
    if config.benchmark == "mt_bench":
      temperature_of = lambda q: mt_bench.temperature_for(q.category)
    else:
      temperature_of = lambda q: g.temperature
    collected: list[dict[str, Any]] = []

    def on_batch(records: list[dict[str, Any]]) -> None:
      collected.extend(records)
      if _is_writer():
        log.append(records)

    generate_answers(
      todo, generate, name, temperature_of, on_batch, config.questions_per_batch, g.system_prompt, g.seed
    )
    done.update({r["question_id"]: r for r in collected})
  return AnswerSet({qid: list(r["turns"]) for qid, r in done.items()}, name)


# -- judges -------------------------------------------------------------------------------------


def reply_has_verdict(benchmark: str) -> Callable[[ChatReply], bool]:
  """Whether a judge's reply holds a verdict the benchmark can read (others are asked again)."""
  if benchmark == "arena_hard":
    return lambda reply: arena_hard.parse_verdict(reply.text) is not None
  if benchmark == "mt_bench":
    return lambda reply: mt_bench.parse_rating(reply.text) is not None
  return lambda reply: alpaca_eval.parse_preference(reply.text, reply.top_logprobs, True) is not None


def judgment_has_verdict(benchmark: str) -> Callable[[dict[str, Any]], bool]:
  """Whether a chat judge's judgment record holds a usable verdict."""
  if benchmark == "arena_hard":
    return lambda r: (
      bool(r.get("games")) and all(isinstance(g, dict) and g.get("score") in arena_hard.LABELS for g in r["games"])
    )
  if benchmark == "mt_bench":
    return lambda r: r.get("score") != mt_bench.FAILED
  return lambda r: r.get("model_win_prob") is not None


def _judgment_key(record: dict[str, Any]) -> tuple[str, int]:
  return str(record["question_id"]), int(record.get("turn", 1))


def build_judge(config: ConfigDict, workdir: str, models: ModelPool):
  j = config.judge
  if j.kind not in JUDGE_KINDS:
    raise ValueError(f"judge.kind={j.kind!r}; expected one of {JUDGE_KINDS}")
  cache = JudgeCache(
    j.cache_path or storage.join(workdir, JUDGE_CACHE_FILE), usable=reply_has_verdict(config.benchmark)
  )
  if j.kind == "http":
    settings = HttpJudgeSettings(
      base_url=j.base_url,
      model=j.model,
      api_key_env=j.api_key_env,
      timeout_s=j.timeout_s,
      max_retries=j.max_retries,
      backoff_s=j.backoff_s,
      max_backoff_s=j.max_backoff_s,
      max_workers=j.max_workers,
    )
    return HttpJudge(settings, cache=cache)
  if j.kind == "generative":
    path = j.path or config.model.path
    model, tokenizer = models.causal_lm(path, j.param_dtype or config.model.param_dtype)
    return CachedChatJudge(GenerativeJudge(model, tokenizer, judge_name(config, models), j.batch_size), cache)
  if j.path:
    model, tokenizer = models.reward_model(j.path, j.param_dtype)
    return RewardModelJudge.from_reward_model(model, tokenizer, judge_name(config, models), j.batch_size)
  model, tokenizer = models.causal_lm(config.model.path, j.param_dtype or config.model.param_dtype)
  return RewardModelJudge.from_policy(model, tokenizer, judge_name(config, models), j.batch_size)


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def judge_name(config: ConfigDict, models: Optional[ModelPool] = None) -> str:
  """The name the configured judge records in its judgments (known without loading a model)."""
  j = config.judge
  if j.kind == "http":
    return j.model
  if j.kind == "generative":
    return "local:" + _stem(resolve_path(j.path or config.model.path))
  if j.path:
    return "rm:" + _stem(j.path)
  return "digit:" + _stem(resolve_path(config.model.path))


def _record_judge(record: dict[str, Any]) -> str:
  judge = record.get("judge")
  return str(judge[0] if isinstance(judge, list) and judge else judge)


class _LazyJudge:
  """Builds the judge on first use: a resumed run with every judgment on disk loads no model."""

  def __init__(self, config: ConfigDict, workdir: str, models: ModelPool):
    self._args = (config, workdir, models)
    self._judge = None
    self.is_chat = config.judge.kind != "reward_model"
    self.name = judge_name(config, models)
    self._has_verdict = judgment_has_verdict(config.benchmark)

  def get(self):
    if self._judge is None:
      self._judge = build_judge(*self._args)
    return self._judge

  def done(self, log: JsonlAppender, model: str) -> list[dict[str, Any]]:
    """The judgments of `model` by this judge already in `log` (others' are left alone), the
    latest per question and turn. A chat judgment without a usable verdict is not done: it is
    judged again, and the new record, appended after it, is the one read next time."""
    rows = [r for r in log.read() if r.get("model") == model]
    mine = [r for r in rows if _record_judge(r) == self.name]
    if len(mine) < len(rows):
      logging.warning(
        "%s: %d judgments by other judges are ignored (this judge: %s)", log.path, len(rows) - len(mine), self.name
      )
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for r in mine:
      if not self.is_chat or self._has_verdict(r):
        latest[_judgment_key(r)] = r
    failed = {_judgment_key(r) for r in mine} - latest.keys()
    if failed:
      logging.info("%s: %d judgments hold no usable verdict and are judged again", log.path, len(failed))
    return list(latest.values())


def _judge_in_batches(
  log: JsonlAppender, todo: Sequence[Any], per_batch: int, judge_fn: Callable, desc: str
) -> list[dict[str, Any]]:
  out = []
  with tqdm(total=len(todo), desc=desc, unit="question") as bar:
    for start in range(0, len(todo), per_batch):
      records = judge_fn(todo[start : start + per_batch])
      if _is_writer():
        log.append(records)
      out.extend(records)
      bar.update(len(todo[start : start + per_batch]))
  return out


# -- what produced the workdir ------------------------------------------------------------------

# Fields that change where or how fast the run goes, or only how its stored work is summed up
# (scoring is recomputed from every judgment on each run), never what it stores. Paths whose
# content is fingerprinted (the answer model, the answer and question files) are compared by
# their fingerprints instead, so a moved file is the same file.
_IGNORED = (
  "output_dir",
  "mesh",
  "distributed",
  "resume",
  "label",
  "questions_per_batch",
  "generation.batch_size",
  "model.path",
  "model.answers",
  "questions.path",
  "baseline.path",
  "judge.timeout_s",
  "judge.max_retries",
  "judge.backoff_s",
  "judge.max_backoff_s",
  "judge.max_workers",
  "judge.api_key_env",
  "judge.cache_path",
  "judge.batch_size",
  "judge.base_url",
  "judge.model",
  "judge.path",
  "scoring",
  "alpaca.difficulty_file",
)
_EXTENDS = ("questions.limit",)
# Fields that decide judgments. Judgments are kept by the judge's name, so under another name
# they are another judge's, kept apart from the old ones (and allowed); under the same name they
# would be mixed with the old ones (and are refused).
_JUDGMENT_FIELDS = (
  "judge",
  "models.judge",
  "baseline",
  "inputs.baseline",
  "references_path",
  "judge_prompts_path",
  "alpaca.order_seed",
  "alpaca.top_logprobs",
)
_QUESTION_FILES = {
  "arena_hard": sources.ARENA_HARD_QUESTIONS,
  "mt_bench": sources.MT_BENCH_QUESTIONS,
  "alpaca_eval": sources.ALPACA_EVAL_BASELINE,
}


def questions_file(config: ConfigDict) -> str:
  """The file `load_questions` reads (for AlpacaEval also the baseline's answers)."""
  override = config.questions.path
  if config.benchmark == "alpaca_eval":
    override = config.baseline.path or override
  return override or os.fspath(sources.locate(*_QUESTION_FILES[config.benchmark]))


def answers_fingerprint(path: str) -> str:
  """The fingerprint of an answer file, or of a scaling output folder's results."""
  if storage.is_dir(path):
    path = storage.join(path, "results.jsonl")
  if storage.is_file(path):
    return file_fingerprint(path)
  if object_log.log_exists(path):  # a bucket's append log of parts
    return text_fingerprint(object_log.read_log(path).decode("latin-1"))
  return "(missing)"  # read_answers names the missing file next


def judge_identity(config: ConfigDict) -> dict[str, str]:
  """The judge's record: an HTTP judge's model at its endpoint, a local judge's checkpoint (its
  fingerprint), and the name its judgments are kept under."""
  j = config.judge
  name = judge_name(config)
  if j.kind == "http":
    return {"path": j.base_url, "fingerprint": f"{j.model} at {j.base_url}", "name": name}
  return {**model_identity(j.path or config.model.path).to_record(), "name": name}


def evaluation_identity(config: ConfigDict) -> RunIdentity:
  """What an evaluation run is, for the workdir's record (read without loading any model)."""
  inputs = {"questions": file_fingerprint(questions_file(config))}
  models = {"judge": judge_identity(config)}
  if config.model.answers:
    inputs["answers"] = answers_fingerprint(config.model.answers)
  else:
    models["answers"] = model_identity(config.model.path).to_record()
  if config.benchmark == "arena_hard" and config.baseline.path:
    inputs["baseline"] = file_fingerprint(config.baseline.path)
  return RunIdentity("benchmark evaluation", json_values(config.to_dict()), models, inputs)


def check_workdir_identity(config: ConfigDict, workdir: str) -> None:
  """Refuses (`RunMismatch`) a rerun into a workdir holding answers or judgments of a run that
  differs in a field that changes them, naming each field with both values; then records this
  run (process 0). `config.resume="force"` continues anyway."""
  identity = evaluation_identity(config)
  before = read_identity(identity_file(workdir))
  ignored: tuple[str, ...] = _IGNORED
  if before is not None and before.models.get("judge", {}).get("name") != identity.models["judge"]["name"]:
    ignored += _JUDGMENT_FIELDS
  rules = FieldRules(extends=_EXTENDS, ignores=ignored)
  has_work = any(object_log.log_exists(storage.join(workdir, name)) for name in (ANSWERS_FILE, JUDGMENTS_FILE))
  resume = config.get("resume", "check")
  if _is_writer():
    check_and_record(workdir, identity, rules, resume, has_work)
  else:
    check_rerun(workdir, identity, rules, resume, has_work)


# -- the three benchmarks -----------------------------------------------------------------------


def _arena_hard(config, workdir, questions, answers, baseline, baseline_name, judge):
  log = JsonlAppender(storage.join(workdir, JUDGMENTS_FILE))
  done = judge.done(log, answers.model)
  done_ids = {str(r["question_id"]) for r in done}
  missing_base = [q.id for q in questions if q.id not in baseline]
  if missing_base:
    raise ValueError(
      f"the baseline {baseline_name!r} has no answer to {len(missing_base)} questions (first: {missing_base[:5]})"
    )
  todo = [
    arena_hard.PairItem(q.id, q.turns[0], answers.turns[q.id][0], baseline[q.id])
    for q in questions
    if q.id not in done_ids
  ]
  j = config.judge
  if judge.is_chat:
    fn = lambda items: arena_hard.judge_with_chat(judge.get(), items, answers.model, j.temperature, j.max_tokens)
  else:
    fn = lambda items: arena_hard.judge_with_scores(judge.get(), items, answers.model, j.tie_margin, j.strong_margin)
  records = done + _judge_in_batches(log, todo, config.questions_per_batch, fn, "arena-hard judgments")
  wanted = {q.id for q in questions}
  records = [r for r in records if str(r["question_id"]) in wanted]
  s = config.scoring
  style_answers = None
  if s.style_control:
    style_answers = {answers.model: {k: v[0] for k, v in answers.turns.items()}, baseline_name: baseline}
  try:
    scores = arena_hard.score_judgments(
      records, baseline_name, s.bootstrap_rounds, s.seed, s.style_control, style_answers
    )
  except ValueError as e:
    raise ValueError(f"{log.path}: cannot score the judgments ({e}); they are kept") from None
  metrics = scores[answers.model]
  metrics["mean_answer_chars"] = statistics.fmean(len(answers.turns[q.id][0]) for q in questions)
  counts = {"questions": len(questions), "judged": len(records), "failed": metrics["failed_games"]}
  return metrics, (metrics["score"], metrics["ci_low"], metrics["ci_high"]), counts, records


def _mt_bench(config, workdir, questions, answers, judge):
  log = JsonlAppender(storage.join(workdir, JUDGMENTS_FILE))
  done = judge.done(log, answers.model)
  turns_done: dict[str, set[int]] = {}
  for r in done:
    turns_done.setdefault(str(r["question_id"]), set()).add(int(r.get("turn", 1)))
  todo_q = [q for q in questions if turns_done.get(q.id, set()) != {1, 2}]
  done = [r for r in done if turns_done.get(str(r["question_id"])) == {1, 2}]
  needs_refs = any(q.category in mt_bench.REFERENCE_CATEGORIES for q in todo_q) and judge.is_chat
  refs = sources.mt_bench_references(config.references_path) if needs_refs else {}
  items = [
    mt_bench.GradeItem(q.id, q.category, q.turns, tuple(answers.turns[q.id][:2]), tuple(refs.get(q.id, ())))
    for q in todo_q
  ]
  j = config.judge
  if judge.is_chat:
    prompts = sources.mt_bench_judge_prompts(config.judge_prompts_path)
    fn = lambda batch: mt_bench.judge_with_chat(judge.get(), batch, prompts, answers.model, j.temperature, j.max_tokens)
  else:
    fn = lambda batch: mt_bench.judge_with_scores(judge.get(), batch, answers.model)
  records = done + _judge_in_batches(log, items, config.questions_per_batch, fn, "mt-bench judgments")
  wanted = {q.id: q.category for q in questions}
  records = [r for r in records if str(r["question_id"]) in wanted]
  raw = not judge.is_chat
  table = mt_bench.category_table(records, wanted, raw_scale=raw)
  overall = table[-1]
  if overall["average"] is None:
    raise ValueError(f"{log.path}: no MT-Bench judgment holds a readable rating; they are kept")
  ci = mt_bench.bootstrap_mean_by_question(records, config.scoring.bootstrap_rounds, config.scoring.seed, raw)
  if _is_writer():
    storage.write_atomic(storage.join(workdir, MT_BENCH_TABLE), mt_bench.table_markdown(table) + "\n")
  metrics = {
    "average": overall["average"],
    "turn_1": overall["turn_1"],
    "turn_2": overall["turn_2"],
    "ci_low": ci[0],
    "ci_high": ci[1],
    "categories": table,
    "raw_scale": raw,
  }
  counts = {"questions": len(questions), "judged": len(records), "failed": overall["failed"]}
  return metrics, (overall["average"], ci[0], ci[1]), counts, records


def _alpaca_eval(config, workdir, questions, answers, baseline, baseline_name, judge):
  # The difficulty table first: a wrong local path fails before any judge call, and a missing
  # hub table warns once, here, for the whole run.
  table, table_note = alpaca_difficulty.resolve_difficulty_table(config.alpaca.difficulty_file)
  log = JsonlAppender(storage.join(workdir, JUDGMENTS_FILE))
  done = judge.done(log, answers.model)
  done_ids = {str(r["question_id"]) for r in done}
  todo = [(q.id, q.turns[0], answers.turns[q.id][0], baseline[q.id]) for q in questions if q.id not in done_ids]
  a = config.alpaca
  if judge.is_chat:
    fn = lambda items: alpaca_eval.judge_with_chat(
      judge.get(), items, answers.model, baseline_name, a.order_seed, config.judge.max_tokens, a.top_logprobs
    )
  else:
    fn = lambda items: alpaca_eval.judge_with_scores(judge.get(), items, answers.model, baseline_name)
  records = done + _judge_in_batches(log, todo, config.questions_per_batch, fn, "alpaca-eval judgments")
  wanted = {q.id for q in questions}
  records = [r for r in records if str(r["question_id"]) in wanted]
  try:
    metrics = alpaca_eval.win_rates(records, table, config.scoring.bootstrap_rounds, config.scoring.seed, table_note)
  except ValueError as e:
    raise ValueError(f"{log.path}: cannot score the judgments ({e}); they are kept") from None
  counts = {"questions": len(questions), "judged": len(records), "failed": metrics["failed"]}
  return metrics, (metrics["lc_win_rate"], metrics["lc_ci_low"], metrics["lc_ci_high"]), counts, records


def run_evaluation(config: ConfigDict, workdir: Optional[str] = None) -> dict[str, Any]:
  """Runs (or resumes) the evaluation of `config` in `workdir` (default `config.output_dir`);
  returns the result record that is also written to `<workdir>/eval_result.json`. The workdir
  is checked writable and held by this run alone (on process 0, the one that writes)."""
  check_config(config)
  workdir = workdir or config.output_dir
  with claim_run_folder(workdir, what=f"{config.benchmark} evaluation", enabled=_is_writer()):
    return _run_evaluation(config, workdir)


def _run_evaluation(config: ConfigDict, workdir: str) -> dict[str, Any]:
  storage.makedirs(workdir)
  questions, baseline, baseline_name = load_questions(config)
  if not questions:
    raise ValueError("no questions selected (check questions.start and questions.limit)")
  check_workdir_identity(config, workdir)
  models = ModelPool(config.mesh)
  answers = obtain_answers(config, workdir, questions, models)
  if config.judge.kind == "http" and not _is_writer():
    # An API judge needs no collective work: process 0 alone judges, scores and writes.
    return {"skipped": "judging and scoring run on process 0"}
  judge = _LazyJudge(config, workdir, models)
  if config.benchmark == "arena_hard":
    outcome = _arena_hard(config, workdir, questions, answers, baseline, baseline_name, judge)
  elif config.benchmark == "mt_bench":
    outcome = _mt_bench(config, workdir, questions, answers, judge)
  else:
    outcome = _alpaca_eval(config, workdir, questions, answers, baseline, baseline_name, judge)
  metrics, headline, counts, records = outcome
  result = make_result(
    config.benchmark,
    answers.model,
    headline[0],
    headline[1:],
    metrics,
    counts,
    label=config.label or (answers.scaling or {}).get("label", ""),
    judge=judge.name,
    baseline=baseline_name,
    scaling=answers.scaling,
    config=config.to_dict(),
    note=metrics.get("lc_note", ""),
  )
  if _is_writer():
    if storage.is_remote(workdir):
      _compact_logs(config, workdir)
    write_result(workdir, result)
  return result


def _compact_logs(config: ConfigDict, workdir: str) -> None:
  """The workdir's append logs in a bucket as one object each. A judge cache shared through
  `judge.cache_path` is left alone: another run may be appending to it."""
  names = [JUDGMENTS_FILE] + ([] if config.model.answers else [ANSWERS_FILE])
  names += [] if config.judge.cache_path else [JUDGE_CACHE_FILE]
  for name in names:
    JsonlAppender(storage.join(workdir, name)).compact()
