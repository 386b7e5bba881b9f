"""Evaluation end to end: a tiny model answers through the project's sampler, a judge server on
127.0.0.1 judges, through the real entry point (`evaluate`) and its command line; resume, crash
safety, and no API key in any file."""

import json
import os
import subprocess
import sys

import pytest

import helpsteer_jax as hj
from helpsteer_jax.eval import runner
from helpsteer_jax.eval.judges.http_judge import JudgeError
from helpsteer_jax.evaluate import evaluate
from helpsteer_jax.tables import make_tables
from helpsteer_jax.testing.checkout import experiment_config
from helpsteer_jax.testing.eval_runs import KEY_ENV, SECRET, eval_config

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _no_secret_in(folder):
  for root, _, files in os.walk(folder):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        assert SECRET.encode() not in f.read(), f"the API key leaked into {name}"


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_arena_hard_end_to_end_with_resume(model_dir, judge_server, tmp_path, bundled_data, monkeypatch):
  work = tmp_path / "arena"
  result = evaluate(eval_config("arena_hard", model_dir, judge_server, limit=1, label="base"), str(work))
  assert len(judge_server.requests) == 2  # two games for one question
  # Grow the question set: only the new question is answered and judged.
  result = evaluate(eval_config("arena_hard", model_dir, judge_server, limit=2, label="base"), str(work))
  assert len(judge_server.requests) == 4
  answers = _lines(work / "answers.jsonl")
  judgments = _lines(work / "judgments.jsonl")
  assert [a["question_id"] for a in answers] == [j["question_id"] for j in judgments]
  assert all(len(a["turns"]) == 1 and a["num_tokens"][0] <= 4 for a in answers)
  assert all(len(j["games"]) == 2 and j["judge"] == "loopback-judge" for j in judgments)
  assert all(g["score"] == "A>B" for j in judgments for g in j["games"])
  # The server always prefers assistant A: one win and one loss per question, a score of 50.
  assert result["headline"]["value"] == pytest.approx(50.0, abs=1e-6)
  assert result["label"] == "base" and result["counts"] == {"questions": 2, "judged": 2, "failed": 0}
  on_disk = json.load(open(work / "eval_result.json"))
  assert on_disk["headline"] == result["headline"] and on_disk["config"]["judge"]["api_key_env"] == KEY_ENV

  # A full rerun: no generation, no judge call.
  monkeypatch.setattr(runner, "make_generate_fn", lambda *a, **k: pytest.fail("answers were regenerated"))
  again = evaluate(eval_config("arena_hard", model_dir, judge_server, limit=2, label="base"), str(work))
  assert len(judge_server.requests) == 4 and again["headline"] == result["headline"]
  # Another judge in the same folder judges afresh: earlier judges' verdicts are not reused.
  other = eval_config("arena_hard", model_dir, judge_server, limit=2, label="base")
  other.judge.model = "another-judge"
  assert evaluate(other, str(work))["judge"] == "another-judge"
  assert len(judge_server.requests) == 8 and len(_lines(work / "judgments.jsonl")) == 4
  _no_secret_in(work)


def test_a_judge_failure_keeps_the_answers_and_the_rerun_resumes(model_dir, judge_server, tmp_path, bundled_data):
  work = tmp_path / "crash"
  judge_server.fail_next = [401]  # not retryable: the run stops
  with pytest.raises(JudgeError, match="HTTP 401"):
    evaluate(eval_config("arena_hard", model_dir, judge_server, limit=1), str(work))
  assert len(_lines(work / "answers.jsonl")) == 1 and not os.path.exists(work / "judgments.jsonl")
  result = evaluate(eval_config("arena_hard", model_dir, judge_server, limit=1), str(work))
  assert result["counts"]["judged"] == 1 and len(_lines(work / "answers.jsonl")) == 1


def test_mt_bench_end_to_end(model_dir, judge_server, tmp_path, bundled_data):
  # Question 100 (roleplay, no reference) and 101 (reasoning, graded against its reference).
  work = tmp_path / "mt"
  result = evaluate(eval_config("mt_bench", model_dir, judge_server, limit=2, start=19), str(work))
  judgments = _lines(work / "judgments.jsonl")
  assert [(j["question_id"], j["turn"]) for j in judgments] == [("100", 1), ("100", 2), ("101", 1), ("101", 2)]
  assert [j["judge"][1] for j in judgments] == [
    "single-v1",
    "single-v1-multi-turn",
    "single-math-v1",
    "single-math-v1-multi-turn",
  ]
  assert [j["score"] for j in judgments] == [8.0, 8.0, 6.0, 6.0]  # the server rates 6 with a reference
  rows = {r["category"]: r for r in result["metrics"]["categories"]}
  assert rows["roleplay"]["average"] == 8 and rows["reasoning"]["average"] == 6
  assert result["headline"]["value"] == pytest.approx(7.0)
  answers = _lines(work / "answers.jsonl")
  assert all(len(a["turns"]) == 2 for a in answers)
  assert "| overall |" in open(work / "mt_bench_table.md").read()
  _no_secret_in(work)


def test_alpaca_eval_end_to_end_and_tables(model_dir, judge_server, tmp_path, bundled_data):
  work = tmp_path / "alpaca"
  result = evaluate(eval_config("alpaca_eval", model_dir, judge_server, limit=3, label="base"), str(work))
  judgments = _lines(work / "judgments.jsonl")
  # The server answers "m" with P(m) = 0.8: the model's preference is 0.8 when it is shown as m.
  for j in judgments:
    assert j["model_win_prob"] == pytest.approx(0.8 if j["model_first"] else 0.2)
  assert judge_server.requests[0]["body"]["logprobs"] is True
  expected = 100 * sum(j["model_win_prob"] for j in judgments) / 3
  assert result["metrics"]["win_rate"] == pytest.approx(expected)
  assert 0 <= result["headline"]["value"] <= 100
  report = make_tables([str(tmp_path)], str(tmp_path / "tables"), plots=False)
  assert report["num_results"] == 1
  assert "| base |" in open(tmp_path / "tables" / "tables.md").read()  # an external row
  _no_secret_in(tmp_path)


def test_score_judge_from_the_policy(model_dir, tmp_path, bundled_data):
  config = experiment_config("eval/arena_hard.py", f"tiny,model={model_dir}")  # tiny: the 0-4 digit judge
  config.questions.limit = 2
  config.generation.max_new_tokens = 4
  config.scoring.bootstrap_rounds = 5
  result = evaluate(config, str(tmp_path / "rm"))
  judgments = _lines(tmp_path / "rm" / "judgments.jsonl")
  assert result["judge"].startswith("digit:") and len(judgments) == 2
  for j in judgments:  # a score judge has no position: the two games mirror each other
    g1, g2 = (g["score"] for g in j["games"])
    assert g1 == {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B", "B>A": "A>B", "B>>A": "A>>B"}[g2]


@pytest.mark.entry
def test_command_line_entry_point(model_dir, judge_server, tmp_path, bundled_data):
  env = dict(os.environ, **{KEY_ENV: SECRET})
  work = tmp_path / "cli"
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.evaluate",
    f"--config=experiments/eval/arena_hard.py:tiny,model={model_dir},judge=http",
    f"--config.judge.base_url={judge_server.base_url}",
    f"--config.judge.api_key_env={KEY_ENV}",
    "--config.questions.limit=1",
    "--config.generation.max_new_tokens=3",
    "--config.scoring.bootstrap_rounds=5",
    f"--workdir={work}",
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"arena_hard {os.path.basename(model_dir)}: score = 50.00" in proc.stdout
  assert os.path.isfile(work / "eval_result.json")
  assert SECRET not in proc.stdout + proc.stderr
  _no_secret_in(work)
  # lock_config: a misspelled override fails before any work.
  bad = subprocess.run(
    cmd[:4] + ["--config.judge.bogus_field=1", f"--workdir={tmp_path / 'bad'}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert bad.returncode != 0 and "bogus_field" in bad.stderr
  assert not os.path.exists(tmp_path / "bad")


def test_generative_judge_batches_and_caches(model_dir, tmp_path):
  from helpsteer_jax.eval.judges.base import ChatRequest
  from helpsteer_jax.eval.judges.cache import CachedChatJudge, JudgeCache
  from helpsteer_jax.eval.judges.local_judge import GenerativeJudge

  model, tokenizer = hj.load_pretrained(model_dir, show_progress=False)
  calls = []

  class Counting(GenerativeJudge):
    def chat(self, requests):
      calls.append(len(requests))
      return super().chat(requests)

  judge = CachedChatJudge(Counting(model, tokenizer, "local:tiny"), JudgeCache(str(tmp_path / "c.jsonl")))
  requests = [
    ChatRequest.of([{"role": "system", "content": "Judge."}, {"role": "user", "content": f"Q{i}"}], max_tokens=3)
    for i in range(3)
  ]
  too_long = ChatRequest.of([{"role": "user", "content": "word " * 5000}], max_tokens=3)
  replies = judge.chat(requests + [too_long])
  assert len(replies) == 4 and replies[3].text == ""  # over the context: an empty (failed) judgment
  assert judge.chat(requests) == [type(r)(r.text, r.top_logprobs, cached=True) for r in replies[:3]]
  assert calls == [4]  # the second call was served from the cache
