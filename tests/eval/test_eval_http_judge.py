"""The HTTP judge against a real OpenAI-compatible server on 127.0.0.1: retries, the on-disk
cache, and the API key kept out of every file and log."""

import logging
import os

import pytest

from helpsteer_jax.eval.judges.base import ChatRequest
from helpsteer_jax.eval.judges.cache import JudgeCache, cache_key
from helpsteer_jax.eval.judges.http_judge import HttpJudge, HttpJudgeSettings, JudgeError
from helpsteer_jax.testing.judge_server import JudgeServer

SECRET = "sk-test-4f1c0ffee-never-written-anywhere"
KEY_ENV = "HELPSTEER_TEST_JUDGE_KEY"


@pytest.fixture()
def server():
  with JudgeServer() as s:
    yield s


@pytest.fixture()
def api_key(monkeypatch):
  monkeypatch.setenv(KEY_ENV, SECRET)
  return SECRET


def _judge(server, cache=None, sleeps=None, **overrides):
  settings = HttpJudgeSettings(
    base_url=server.base_url,
    model="judge-model",
    api_key_env=KEY_ENV,
    timeout_s=10,
    max_retries=3,
    backoff_s=0.01,
    max_backoff_s=0.05,
    max_workers=4,
    **overrides,
  )
  return HttpJudge(settings, cache=cache, sleep=(sleeps.append if sleeps is not None else lambda s: None))


def _request(text="Rate this. [[rating]]"):
  return ChatRequest.of(
    [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": text}],
    temperature=0.0,
    max_tokens=64,
  )


def test_retry_after_a_500_then_success(server, api_key, tmp_path, caplog):
  server.fail_next = [500, 503]
  sleeps = []
  judge = _judge(server, JudgeCache(str(tmp_path / "cache.jsonl")), sleeps)
  with caplog.at_level(logging.DEBUG):
    (reply,) = judge.chat([_request()])
  assert reply.text == "Good answer. Rating: [[8]]"
  assert len(server.requests) == 3 and len(sleeps) == 2
  assert sleeps[1] >= sleeps[0] * 0.5  # exponential backoff (with jitter), capped
  assert all(s <= 0.05 for s in sleeps)
  sent = server.requests[-1]
  assert sent["path"] == "/v1/chat/completions"
  assert sent["headers"]["Authorization"] == f"Bearer {SECRET}"
  assert sent["body"]["model"] == "judge-model" and sent["body"]["temperature"] == 0.0
  assert "retry 1 of 3" in caplog.text and SECRET not in caplog.text


def test_rate_limit_and_retry_after(server, api_key):
  server.fail_next = [429]
  sleeps = []
  judge = _judge(server, sleeps=sleeps)
  assert judge.chat([_request()])[0].text.endswith("[[8]]")
  assert len(sleeps) == 1


def test_cache_hit_on_rerun_sends_no_request_and_holds_no_key(server, api_key, tmp_path):
  path = str(tmp_path / "cache.jsonl")
  requests = [_request(f"question {i} [[rating]]") for i in range(5)]
  first = _judge(server, JudgeCache(path)).chat(requests)
  assert len(server.requests) == 5
  again = _judge(server, JudgeCache(path)).chat(requests)  # a new process would do the same
  assert len(server.requests) == 5  # no new request
  assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)
  content = open(path).read()
  assert SECRET not in content and "Authorization" not in content and "Bearer" not in content
  assert SECRET not in repr(_judge(server))
  # Changing a sampling parameter misses the cache.
  changed = ChatRequest.of(requests[0].message_dicts(), temperature=0.5, max_tokens=64)
  assert cache_key("judge-model", changed) != cache_key("judge-model", requests[0])
  _judge(server, JudgeCache(path)).chat([changed])
  assert len(server.requests) == 6


def test_client_errors_fail_at_once_without_the_key(server, api_key):
  server.fail_next = [401]
  sleeps = []
  with pytest.raises(JudgeError, match="HTTP 401") as err:
    _judge(server, sleeps=sleeps).chat([_request()])
  assert sleeps == [] and SECRET not in str(err.value)


def test_retries_run_out(server, api_key):
  server.fail_next = [500] * 10
  with pytest.raises(JudgeError, match="failed 4 times"):
    _judge(server).chat([_request()])
  assert len(server.requests) == 4


def test_connection_errors_are_retried(api_key):
  with JudgeServer() as s:
    url = s.base_url
  sleeps = []
  settings = HttpJudgeSettings(
    base_url=url, model="m", api_key_env=KEY_ENV, timeout_s=2, max_retries=2, backoff_s=0.01, max_backoff_s=0.02
  )
  with pytest.raises(JudgeError, match="ConnectionError"):
    HttpJudge(settings, sleep=sleeps.append).chat([_request()])
  assert len(sleeps) == 2


def test_missing_key_variable_is_named_and_keyless_endpoints_work(server, monkeypatch):
  monkeypatch.delenv(KEY_ENV, raising=False)
  with pytest.raises(ValueError, match=KEY_ENV):
    _judge(server)
  settings = HttpJudgeSettings(base_url=server.base_url, model="m", api_key_env="")
  HttpJudge(settings).chat([_request()])
  assert "Authorization" not in server.requests[-1]["headers"]


def test_logprobs_are_requested_and_parsed(server, api_key):
  request = ChatRequest.of([{"role": "user", "content": "Reply with either m or M"}], max_tokens=2, top_logprobs=5)
  (reply,) = _judge(server).chat([request])
  assert server.requests[-1]["body"]["logprobs"] is True and server.requests[-1]["body"]["top_logprobs"] == 5
  assert reply.text == "m" and reply.top_logprobs[0]["m"] == pytest.approx(-0.2231, abs=1e-3)


def test_concurrent_requests_keep_their_order(server, api_key, tmp_path):
  requests = [_request(f"q{i} [[rating]]" + (" Reference" if i % 2 else "")) for i in range(12)]
  replies = _judge(server, JudgeCache(str(tmp_path / "c.jsonl"))).chat(requests)
  assert [r.text.endswith("[[6]]") for r in replies] == [bool(i % 2) for i in range(12)]
  assert len(JudgeCache(str(tmp_path / "c.jsonl"))) == 12
  assert os.path.getsize(tmp_path / "c.jsonl") > 0
