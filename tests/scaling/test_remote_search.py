"""The search with every role remote: drafts, feedback and edits from `python -m
helpsteer_jax.serve` on 127.0.0.1 (`endpoint.kind=openai`), the selector a remote reward model
(a loopback server speaking NIM's reward reply). The records name the endpoint of each stage, the
API key is written nowhere, the same config gives the same trees again, and the choice is the
remote reward's."""

import json
import logging
import pathlib

import pytest

from helpsteer_jax.scaling.run import run_search
from helpsteer_jax.testing.judge_server import JudgeServer
from helpsteer_jax.testing.search_runs import records_by_id, search_config, write_prompts
from helpsteer_jax.testing.served import running_server, server_env

pytestmark = pytest.mark.entry  # a server subprocess and two searches

SECRET = "sk-remote-role-secret"
ENV = server_env()


@pytest.fixture(scope="module")
def server(embedded_gguf_path):
  # The embedded SmolLM2 writes feedback with words in it (a tiny random model writes newlines).
  with running_server("--model=embedded", "--served_model_name=smol", env=ENV) as s:
    yield s


def remote_config(server_url, reward_url, tmp_path, out: str):
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["Name a fruit.", "Name a river."])
  config = search_config("", prompts, tmp_path / out, max_new_tokens=5)
  config.search.feedback_rule = "keep_all"  # 5-token feedback is kept, so the edit stage runs too
  endpoint = config.policy.endpoint
  endpoint.kind, endpoint.base_url, endpoint.model, endpoint.api_key_env = "openai", server_url, "smol", "ROLE_KEY"
  endpoint.max_concurrency = 4
  config.selector.kind, config.selector.path = "reward_model", ""
  selector = config.selector.endpoint
  selector.kind, selector.base_url, selector.model = "openai", reward_url, "select"
  return config


def test_a_search_with_remote_roles(server, tmp_path, monkeypatch, caplog):
  monkeypatch.setenv("ROLE_KEY", SECRET)
  caplog.set_level(logging.INFO)
  with JudgeServer(reply=lambda messages: f"reward:{len(messages[-1]['content'])}") as rewards:
    first = remote_config(server.base_url, rewards.base_url, tmp_path, "first")
    summary = run_search(first)
    second = remote_config(server.base_url, rewards.base_url, tmp_path, "again")
    assert run_search(second)["num_prompts"] == 2
  assert summary["num_prompts"] == 2
  records, repeated = records_by_id(first.output_dir), records_by_id(second.output_dir)
  served, select = f"openai:{server.base_url}#smol", f"openai:{rewards.base_url}#select"
  for rid, record in records.items():
    assert record["endpoints"] == {"draft": served, "feedback": served, "edit": served, "select": select}
    assert record["models"]["policy"]["path"] == served and record["models"]["selector"]["path"] == select
    # The same seeds give the same samples from the server, so the same tree.
    assert record["drafts"] == repeated[rid]["drafts"] and record["best"] == repeated[rid]["best"]
    texts = [d["text"] for d in record["drafts"]]
    texts += [e["text"] for d in record["drafts"] for g in d["edit_groups"] for e in g["edits"]]
    assert record["best"]["score"] == max(len(t) for t in texts)
    assert len(record["drafts"]) == 2 and all(len(d["feedbacks"]) == 2 for d in record["drafts"])
    assert all(len(g["edits"]) == 1 for d in record["drafts"] for g in d["edit_groups"])
    assert record["tokens"]["edits"] > 0
    assert record["tokens"]["total"] > 0
  # The key went out in the header of every call to the policy's server and nowhere else.
  for path in pathlib.Path(first.output_dir).rglob("*"):
    if path.is_file():
      assert SECRET not in path.read_text(errors="replace"), path
  assert SECRET not in caplog.text
  summary_text = json.dumps(summary)
  assert SECRET not in summary_text and served in summary_text
