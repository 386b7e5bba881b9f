"""The search served as model `feedback-edit` (`--search_config`), driven by the official `openai`
client: the chosen answer and tree equal the in-process search's for the request's seed, usage
counts the tree's tokens, the tree is kept by completion id, concurrent searches and plain requests
share the engines without a mixed-up answer, and requests the search cannot answer get a 4xx."""

import threading

import httpx
import openai
import pytest

from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.prompt_sources import PromptItem
from helpsteer_jax.scaling.run import build_search
from helpsteer_jax.serve.search_service import SERVED_PROMPT_ID
from helpsteer_jax.testing.search_runs import EXPERIMENT, search_config
from helpsteer_jax.testing.served import running_server, server_env

pytestmark = pytest.mark.entry  # the server runs in a subprocess

QUESTIONS = [[{"role": "user", "content": f"Name a colour, number {i}."}] for i in range(4)]
TOKENS = 5


def _stage_flags() -> list[str]:
  flags = []
  for name in ("draft", "feedback", "edit"):
    flags += [
      f"--search_config.search.{name}.temperature=1.0",
      f"--search_config.search.{name}.max_new_tokens={TOKENS}",
    ]
  return flags


@pytest.fixture(scope="module")
def server(model_dir):
  flags = [f"--search_config={EXPERIMENT}", f"--search_config.policy.path={model_dir}", *_stage_flags()]
  with running_server(*flags, f"--model={model_dir}", "--served_model_name=tiny", env=server_env()) as s:
    yield s


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)


def in_process_record(model_dir, tmp_path, conversation, seed: int) -> dict:
  config = search_config(model_dir, tmp_path / "unused.jsonl", tmp_path / "out", max_new_tokens=TOKENS)
  config.search.seed = seed
  search = build_search(config, ModelPool())
  return search.run([PromptItem(SERVED_PROMPT_ID, conversation)])[0]


def test_the_search_model_answers_as_the_in_process_search(client, server, model_dir, tmp_path):
  assert sorted(m.id for m in client.models.list().data) == ["feedback-edit", "tiny"]
  reply = client.chat.completions.create(model="feedback-edit", messages=QUESTIONS[0], seed=3, temperature=0.2)
  expected = in_process_record(model_dir, tmp_path, QUESTIONS[0], seed=3)
  assert reply.choices[0].message.content == expected["best"]["text"]
  usage = reply.model_dump()["usage"]
  assert usage["completion_tokens"] == expected["tokens"]["total"] == usage["search_tokens"]["total"]
  assert usage["search_tokens"] == expected["tokens"]
  kept = httpx.get(f"{server.base_url}/search_records/{reply.id}", timeout=60).json()
  assert kept["id"] == reply.id and kept["seed"] == 3 and kept["request"] == {"temperature": 0.2}
  assert kept["drafts"] == expected["drafts"] and kept["best"] == expected["best"]


def test_concurrent_searches_and_plain_requests_share_the_engines(client):
  alone = [
    client.chat.completions.create(model="feedback-edit", messages=q, seed=i).choices[0].message.content
    for i, q in enumerate(QUESTIONS)
  ]
  plain_alone = client.chat.completions.create(model="tiny", messages=QUESTIONS[0], max_tokens=6, temperature=0)
  answers: dict[int, str] = {}
  plain: dict[str, str] = {}

  def search(i):
    reply = client.chat.completions.create(model="feedback-edit", messages=QUESTIONS[i], seed=i)
    answers[i] = reply.choices[0].message.content

  def ask_plain():
    reply = client.chat.completions.create(model="tiny", messages=QUESTIONS[0], max_tokens=6, temperature=0)
    plain["text"] = reply.choices[0].message.content

  threads = [threading.Thread(target=search, args=(i,)) for i in range(len(QUESTIONS))]
  threads.append(threading.Thread(target=ask_plain))
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert [answers.get(i) for i in range(len(QUESTIONS))] == alone
  assert plain["text"] == plain_alone.choices[0].message.content


def test_a_streamed_search_sends_the_chosen_answer(client):
  plain = client.chat.completions.create(model="feedback-edit", messages=QUESTIONS[1], seed=5)
  stream = client.chat.completions.create(
    model="feedback-edit", messages=QUESTIONS[1], seed=5, stream=True, stream_options={"include_usage": True}
  )
  text, usage = "", None
  for chunk in stream:
    usage = chunk.usage or usage
    text += "".join(c.delta.content or "" for c in chunk.choices)
  assert text == plain.choices[0].message.content
  assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


@pytest.mark.parametrize(
  "route, change, status, param",
  [
    ("chat/completions", {"n": 2}, 400, "n"),
    ("chat/completions", {"messages": [{"role": "user", "content": "word " * 9000}]}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
    ("completions", {"prompt": "Hello", "messages": None}, 400, "model"),
  ],
)
def test_requests_the_search_cannot_answer_get_a_4xx(server, route, change, status, param):
  body = {"model": "feedback-edit", "messages": QUESTIONS[0], **change}
  body = {k: v for k, v in body.items() if v is not None}
  reply = httpx.post(f"{server.base_url}/{route}", json=body, timeout=60)
  assert reply.status_code == status, reply.text
  assert reply.json()["error"]["param"] == param


def test_an_unknown_record_is_404(server):
  reply = httpx.get(f"{server.base_url}/search_records/chatcmpl-none", timeout=60)
  assert reply.status_code == 404 and reply.json()["error"]["code"] == "record_not_found"
