"""Remote roles without a model: a role's requests against a loopback OpenAI-compatible server,
one call per sample with its own seed, at most `max_concurrency` in flight, failures retried a
bounded number of times; and the config's checks of remote roles before any work."""

import threading
import time

import numpy as np
import pytest

from helpsteer_jax.remote.endpoint import Endpoint, EndpointError, EndpointSettings
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.scaling.config import default_config, role_endpoint
from helpsteer_jax.scaling.remote_roles import RemoteEngine, RemoteRole, sample_seed
from helpsteer_jax.scaling.run import check_search_config
from helpsteer_jax.scaling.search_settings import StageSampling
from helpsteer_jax.testing.judge_server import JudgeServer

STAGE = StageSampling(temperature=0.7, top_p=0.9, top_k=None, max_new_tokens=12)
CONVERSATION = [{"role": "user", "content": "Hello?"}]


def run(engine: RemoteEngine, request) -> None:
  engine.submit(request)
  while engine.busy:
    engine.step()


def test_each_sample_is_one_call_with_its_own_seed_and_tokens():
  with JudgeServer(reply=lambda messages: "a short answer") as server:
    role = RemoteRole("feedback", Endpoint(EndpointSettings(server.base_url, "fb-model")))
    engine = RemoteEngine(role.endpoint)
    got: dict[int, object] = {}
    done: list = []
    key = sample_key(0, "q1", "feedback", 0)
    request = role.request(CONVERSATION, STAGE, 4, key, "feedback", done.append, on_sample=got.__setitem__)
    run(engine, request)
    assert sorted(got) == [0, 1, 2, 3] and len(done) == 1 and len(done[0]) == 4
    assert all(s.text == "a short answer" and s.num_tokens == 3 and s.finished for s in done[0])
    bodies = [r["body"] for r in server.requests]
    assert sorted(b["seed"] for b in bodies) == sorted(sample_seed(key, j) for j in range(4))
    assert len({b["seed"] for b in bodies}) == 4
    assert all(b["model"] == "fb-model" and b["n"] == 1 and b["max_tokens"] == 12 for b in bodies)
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and "top_k" not in b for b in bodies)
    # Only the samples a request lacks are asked for.
    server.requests.clear()
    run(engine, role.request(CONVERSATION, STAGE, 4, key, "feedback", None, indices=[2]))
    assert [r["body"]["seed"] for r in server.requests] == [sample_seed(key, 2)]
    assert engine.stats()["stages"]["feedback"]["samples"] == 5


def test_calls_in_flight_are_bounded_by_max_concurrency():
  active, most, lock = [0], [0], threading.Lock()

  def slow(messages):
    with lock:
      active[0] += 1
      most[0] = max(most[0], active[0])
    time.sleep(0.1)
    with lock:
      active[0] -= 1
    return "ok"

  with JudgeServer(reply=slow) as server:
    endpoint = Endpoint(EndpointSettings(server.base_url, "m", max_concurrency=3))
    role = RemoteRole("policy", endpoint)
    run(RemoteEngine(endpoint), role.request(CONVERSATION, STAGE, 10, sample_key(1), "draft", None))
    assert len(server.requests) == 10
    assert most[0] == 3 and endpoint.most_in_flight == 3


def test_failures_are_retried_a_bounded_number_of_times():
  sleeps: list[float] = []
  with JudgeServer(reply=lambda m: "fine") as server:
    settings = EndpointSettings(server.base_url, "m", max_retries=2, backoff_s=0.01)
    endpoint = Endpoint(settings, what="the edit model", sleep=sleeps.append)
    role = RemoteRole("edit", endpoint)
    server.fail_next = [503, 500]
    run(RemoteEngine(endpoint), role.request(CONVERSATION, STAGE, 1, sample_key(2), "edit", None))
    assert endpoint.calls == 3 and len(sleeps) == 2
    server.fail_next = [503, 503, 503]
    with pytest.raises(EndpointError, match="the edit model .* failed 3 times; last: HTTP 503"):
      run(RemoteEngine(endpoint), role.request(CONVERSATION, STAGE, 1, sample_key(3), "edit", None))
    server.fail_next = [400]
    with pytest.raises(EndpointError, match="answered HTTP 400"):
      run(RemoteEngine(endpoint), role.request(CONVERSATION, STAGE, 1, sample_key(4), "edit", None))


def test_the_key_is_sent_but_never_shown(monkeypatch):
  monkeypatch.setenv("ROLE_KEY", "sk-role-secret")
  with JudgeServer(reply=lambda m: "echo sk-role-secret") as server:
    endpoint = Endpoint(EndpointSettings(server.base_url, "m", api_key_env="ROLE_KEY", max_retries=0))
    run(
      RemoteEngine(endpoint), RemoteRole("policy", endpoint).request(CONVERSATION, STAGE, 1, sample_key(5), "d", None)
    )
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-role-secret"
    assert "sk-role-secret" not in repr(endpoint) + endpoint.name
    server.fail_next = [401]
    with pytest.raises(EndpointError) as error:
      endpoint.post("chat/completions", {"model": "m", "messages": CONVERSATION})
    assert "sk-role-secret" not in str(error.value)
  monkeypatch.delenv("ROLE_KEY")
  with pytest.raises(ValueError, match="'ROLE_KEY' of the endpoint is not set"):
    Endpoint(EndpointSettings("http://127.0.0.1:9/v1", "m", api_key_env="ROLE_KEY"))


def test_seeds_differ_by_key_and_index():
  a, b = sample_key(0, "q", "draft"), sample_key(0, "q", "feedback", 0)
  seeds = {sample_seed(k, j) for k in (a, b) for j in range(8)}
  assert len(seeds) == 16 and all(0 <= s < 2**31 for s in seeds)
  assert sample_seed(np.array(a), 3) == sample_seed(a, 3)


def _remote(config, block: str, url: str = "http://127.0.0.1:9/v1", model: str = "m"):
  config[block].endpoint.kind = "openai"
  config[block].endpoint.base_url = url
  config[block].endpoint.model = model


def test_roles_played_by_a_remote_policy_follow_it():
  config = default_config()
  _remote(config, "policy")
  assert all(role_endpoint(config, n) is config.policy.endpoint for n in ("policy", "feedback", "edit", "judge"))
  config.feedback_model.path = "some/folder"
  assert role_endpoint(config, "feedback") is None


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: setattr(c.edit_model.endpoint, "kind", "grpc"), "edit_model.endpoint.kind='grpc'"),
    (lambda c: _remote(c, "feedback_model", url="localhost:8000"), "feedback_model.endpoint.base_url"),
    (lambda c: _remote(c, "feedback_model", model=""), "feedback_model.endpoint.model"),
    (lambda c: (_remote(c, "policy"), setattr(c.search, "schedule", "staged")), "use search.schedule='pipelined'"),
    (lambda c: (_remote(c, "policy"), setattr(c.policy.endpoint, "max_concurrency", 0)), "max_concurrency=0"),
  ],
)
def test_bad_remote_settings_fail_before_any_work(change, message):
  config = default_config()
  change(config)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
    check_search_config(config)


def test_a_remote_reward_selector_needs_no_folder():
  config = default_config()
  config.selector.kind = "reward_model"
  with pytest.raises(ValueError, match="needs selector.path"):
    check_search_config(config)
  config.selector.path = ""
  _remote(config, "selector")
  check_search_config(config)
