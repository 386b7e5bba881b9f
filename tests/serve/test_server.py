"""`python -m helpsteer_jax.serve` on 127.0.0.1, driven by the official `openai` client: answers
equal to `hj.generate` for the same seed (plain, streamed, n > 1), 16 concurrent clients without a
lost or mixed-up answer, every bad request refused with a 4xx naming the field, overload refused
with 429, and SIGTERM finishing the request in flight."""

import json
import signal
import threading
import time
import urllib.request

import httpx
import openai
import pytest

import helpsteer_jax as hj
from helpsteer_jax.sampling.generate import encode_conversations
from helpsteer_jax.testing.served import running_server, server_env

pytestmark = pytest.mark.entry  # the server runs in a subprocess

ENV = server_env()
QUESTION = [{"role": "user", "content": "What is 2+2? Answer briefly."}]


@pytest.fixture(scope="module")
def embedded(embedded_gguf_path):
  return hj.load_pretrained("embedded", show_progress=False)


@pytest.fixture(scope="module")
def server(embedded_gguf_path):
  with running_server("--model=embedded", "--num_slots=16", env=ENV) as s:
    yield s


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


def test_models_and_health(server, client):
  assert [m.id for m in client.models.list().data] == ["embedded"]
  with urllib.request.urlopen(server.base_url.replace("/v1", "/health")) as reply:
    assert json.load(reply)["status"] == "ok"


def test_chat_answers_equal_hj_generate_for_the_seed(client, embedded):
  model, tokenizer = embedded
  for temperature, seed in ((0.0, 0), (1.0, 7)):
    reply = client.chat.completions.create(
      model="embedded", messages=QUESTION, max_tokens=12, temperature=temperature, seed=seed
    )
    [[expected]] = hj.generate(model, tokenizer, [QUESTION], max_new_tokens=12, temperature=temperature, seed=seed)
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == len(encode_conversations(tokenizer, [QUESTION])[0])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert 0 < reply.usage.completion_tokens <= 12


def test_n_samples_and_streaming_equal_the_plain_answer(client, embedded):
  model, tokenizer = embedded
  [expected] = hj.generate(model, tokenizer, [QUESTION], max_new_tokens=10, temperature=1.0, n=3, seed=11)
  plain = client.chat.completions.create(
    model="embedded", messages=QUESTION, max_tokens=10, temperature=1.0, n=3, seed=11
  )
  assert [c.index for c in plain.choices] == [0, 1, 2]
  assert [c.message.content for c in plain.choices] == expected
  stream = client.chat.completions.create(
    model="embedded",
    messages=QUESTION,
    max_tokens=10,
    temperature=1.0,
    n=3,
    seed=11,
    stream=True,
    stream_options={"include_usage": True},
  )
  texts, finished, usage = {}, {}, None
  for chunk in stream:
    if chunk.usage is not None:
      usage = chunk.usage
    for choice in chunk.choices:
      texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
      if choice.finish_reason is not None:
        finished[choice.index] = choice.finish_reason
  assert [texts[i] for i in range(3)] == expected
  assert sorted(finished) == [0, 1, 2] and usage.completion_tokens == plain.usage.completion_tokens


def test_completions_with_a_stop_string(client):
  whole = client.completions.create(
    model="embedded", prompt="Count: one, two, three, four,", max_tokens=12, temperature=0
  )
  stopped = client.completions.create(
    model="embedded", prompt="Count: one, two, three, four,", max_tokens=12, temperature=0, stop=[","]
  )
  assert "," in whole.choices[0].text
  assert stopped.choices[0].text == whole.choices[0].text.split(",")[0]
  assert stopped.choices[0].finish_reason == "stop"


def test_sixteen_concurrent_clients_each_get_their_own_answer(client, embedded):
  model, tokenizer = embedded
  conversations = [[{"role": "user", "content": f"Say the number {i} and nothing else."}] for i in range(16)]
  expected = hj.generate(model, tokenizer, conversations, max_new_tokens=8, temperature=0.0)
  answers: dict[int, str] = {}

  def ask(i):
    reply = client.chat.completions.create(model="embedded", messages=conversations[i], max_tokens=8, temperature=0)
    answers[i] = reply.choices[0].message.content

  threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert [answers.get(i) for i in range(16)] == [e[0] for e in expected]


@pytest.mark.parametrize(
  "change, status, param",
  [
    ({"model": "no-such-model"}, 404, "model"),
    ({"temperature": 3.0}, 400, "temperature"),
    ({"top_p": 0.0}, 400, "top_p"),
    ({"n": 0}, 400, "n"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 9000}]}, 400, "messages"),
  ],
)
def test_a_bad_request_gets_a_4xx_naming_the_field(server, change, status, param):
  body = {"model": "embedded", "messages": QUESTION, "max_tokens": 4, **change}
  reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
  assert reply.status_code == status, reply.text
  error = reply.json()["error"]
  assert error["param"] == param and error["message"], error


def test_malformed_json_gets_400(server):
  reply = httpx.post(
    f"{server.base_url}/chat/completions",
    content=b'{"model": "embedded", "messages": [',
    headers={"content-type": "application/json"},
    timeout=60,
  )
  assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]


def test_overload_gets_429_and_sigterm_finishes_the_request_in_flight(embedded_gguf_path):
  with running_server("--model=embedded", "--num_slots=4", "--max_open_requests=1", env=ENV) as s:
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=300)
    outcome = {}

    def long_request():
      reply = client.chat.completions.create(model="embedded", messages=QUESTION, max_tokens=120, temperature=0)
      outcome["finish"] = reply.choices[0].finish_reason
      outcome["tokens"] = reply.usage.completion_tokens

    first = threading.Thread(target=long_request)
    first.start()
    health = s.base_url.replace("/v1", "/health")
    deadline = time.monotonic() + 60
    while json.load(urllib.request.urlopen(health))["open_requests"] < 1:
      assert time.monotonic() < deadline, "the first request never opened"
      time.sleep(0.05)
    with pytest.raises(openai.RateLimitError) as refused:
      client.chat.completions.create(model="embedded", messages=QUESTION, max_tokens=4)
    assert refused.value.status_code == 429
    s.process.send_signal(signal.SIGTERM)
    first.join(timeout=120)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit is by SIGTERM.
    assert s.process.wait(timeout=60) in (0, -signal.SIGTERM), s.output()[-3000:]
    assert "Finished server process" in s.output()
    assert outcome.get("tokens", 0) > 0, s.output()[-3000:]
