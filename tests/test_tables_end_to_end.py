"""Both of the paper's tables from search runs alone: every run of experiments/scaling/ablations.py
(two policies, every variant of one) searches the questions of all three benchmarks, `evaluate`
grades each run's folder with a local judge, two external models are graded from answer files, and
`tables` fills every cell of the main and ablation tables, each with its interval and the run's
token multiple. The default test uses tiny random models in every role; the slow one the embedded
SmolLM2 as the experiments ship."""

import csv
import importlib.util
import json
import os

import pytest

import helpsteer_jax as hj
from helpsteer_jax import scale
from helpsteer_jax.eval.runner import run_evaluation
from helpsteer_jax.eval.tables import ABLATION_VARIANTS
from helpsteer_jax.scaling.config import stage
from helpsteer_jax.scaling.results import read_records
from helpsteer_jax.tables import make_tables
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ("arena_hard", "mt_bench", "alpaca_eval")
EXTERNALS = ("gpt-4o", "claude-3.5-sonnet")


def _experiment(path):
  spec = importlib.util.spec_from_file_location("experiment", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ABLATIONS = _experiment("experiments/scaling/ablations.py")


def _save(folder, seed):
  hj.save_pretrained(
    tiny_chat_model(seed=seed, tie_word_embeddings=False), smollm2_tokenizer(), str(folder), show_progress=False
  )
  return str(folder)


@pytest.fixture(scope="module")
def tiny_roles(tmp_path_factory):
  """A tiny model for each role: two policies, the Feedback model, the Edit model and its SFT."""
  root = tmp_path_factory.mktemp("roles")
  return {
    name: _save(root / name, seed) for seed, name in enumerate(("policy_a", "policy_b", "feedback", "edit", "edit_sft"))
  }


def _runs(policies):
  """(policy label, policy path or "", variant) of every search the two tables need."""
  (first, first_path), (second, second_path) = policies
  return [(first, first_path, v) for v in ABLATIONS.VARIANTS] + [
    (second, second_path, v) for v in ABLATIONS.MAIN_TABLE_VARIANTS
  ]


def _search(root, benchmark, policy, policy_path, variant, roles, questions, tokens):
  args = f"variant={variant},size=smollm2,prompts={benchmark}"
  if roles:
    args += f",feedback={roles['feedback']},edit={roles['edit']},edit_sft={roles['edit_sft']}"
  config = ABLATIONS.get_config(args)
  if policy_path:
    config.policy.path = policy_path
  config.prompts.limit = questions
  for name in ("draft", "feedback", "edit"):
    config.search[name] = stage(temperature=1.0, max_new_tokens=tokens)
  config.search.num_feedback_samples = 3  # the point's 3 effective feedbacks, none more sampled
  config.label = f"{policy}:{variant}"
  config.output_dir = str(root / "search" / benchmark / f"{policy}_{variant}")
  scale.run_search(config)
  return config.output_dir


def _evaluate(root, benchmark, answers, judge_model, questions, label=""):
  arg = (
    f"tiny,answers={answers}" + (f",model={judge_model}" if judge_model else "") + (f",label={label}" if label else "")
  )
  config = _experiment(f"experiments/eval/{benchmark}.py").get_config(arg)
  config.questions.limit = questions
  name = label or os.path.basename(answers)
  return run_evaluation(config, str(root / "eval" / benchmark / name))


def _external_answers(root, benchmark, name, search_dir):
  """An external model's answer file (the project's layout) to the questions a search answered:
  its text is the search's greedy answer reversed, so it differs from every run."""
  by_question = {}
  for r in read_records(search_dir):
    by_question.setdefault(str(r.get("question_id", r["id"])), []).append(r["best"]["text"][::-1] or "ok")
  path = root / "answers" / benchmark / f"{name}.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    for qid, turns in by_question.items():
      f.write(json.dumps({"question_id": qid, "model": name, "turns": turns}) + "\n")
  return str(path)


def _fill_tables(root, policies, roles, questions, tokens, judge_model):
  for benchmark in BENCHMARKS:
    for policy, path, variant in _runs(policies):
      folder = _search(root, benchmark, policy, path, variant, roles, questions, tokens)
      result = _evaluate(root, benchmark, folder, judge_model, questions)
      assert result["label"] == f"{policy}:{variant}"  # the search's own label, read from its folder
    greedy = str(root / "search" / benchmark / f"{policies[0][0]}_greedy")
    for name in EXTERNALS:
      _evaluate(root, benchmark, _external_answers(root, benchmark, name, greedy), judge_model, questions, label=name)
  report = make_tables([str(root / "eval")], str(root / "tables"))
  tables = {}
  for name in ("main", "ablation"):
    with open(root / "tables" / f"{name}.csv") as f:
      tables[name] = list(csv.DictReader(f))
  return tables, report


def _check_every_cell(tables, report, policies):
  (first, _), (second, _) = policies
  # Known policies first, then the others by name: here `first` comes first either way.
  assert [r["label"] for r in tables["main"]] == [
    f"{first}:greedy",
    f"{first}:feedback_edit",
    f"{second}:greedy",
    f"{second}:feedback_edit",
    *EXTERNALS,
  ]
  assert [r["label"] for r in tables["ablation"]] == [f"{first}:{v}" for v, _ in ABLATION_VARIANTS]
  for table, rows in tables.items():
    for row in rows:
      for benchmark in BENCHMARKS:
        for column in (benchmark, f"{benchmark}_ci_low", f"{benchmark}_ci_high"):
          assert row[column] != "", f"{table} table, row {row['label']}: no {column}"
      if row["label"] not in EXTERNALS:
        assert float(row["token_multiple"]) >= 1.0, row
  # The greedy runs are the scaling plot's 1x references; Best-of-N is a reference of its own.
  kinds = {(p["benchmark"], p["kind"]) for p in report["scaling_points"]}
  assert {(b, k) for b in BENCHMARKS for k in ("greedy", "best_of_n", "grid")} <= kinds
  assert all(p["token_multiple"] == 1.0 for p in report["scaling_points"] if p["kind"] == "greedy")


def test_every_cell_of_both_tables_from_tiny_searches(tiny_roles, tmp_path, bundled_data):
  policies = (("tiny_a", tiny_roles["policy_a"]), ("tiny_b", tiny_roles["policy_b"]))
  tables, report = _fill_tables(
    tmp_path, policies, tiny_roles, questions=2, tokens=4, judge_model=tiny_roles["policy_a"]
  )
  _check_every_cell(tables, report, policies)


@pytest.mark.slow
def test_every_cell_of_both_tables_from_smollm2_searches(tiny_roles, tmp_path, bundled_data, embedded_gguf_path):
  """The experiments as they ship at size=smollm2 (the embedded model in every role, its stand-in
  Edit models), two questions per benchmark; the second policy is a tiny model."""
  policies = (("smollm2", ""), ("tiny_b", tiny_roles["policy_b"]))
  tables, report = _fill_tables(tmp_path, policies, None, questions=2, tokens=24, judge_model="")
  _check_every_cell(tables, report, policies)
