"""The remote selectors: NIM's reward reply read as documented (a lone reward, a named attribute,
HelpSteer2's weighted sum of five), the judge's expected digit from its top log-probabilities, and
each selector's request shape against a loopback server."""

import math

import pytest

from helpsteer_jax.remote.endpoint import Endpoint, EndpointSettings
from helpsteer_jax.scoring.remote_selectors import (
  RemoteJudgeSelector,
  RemoteRewardSelector,
  judge_score,
  parse_reward,
)
from helpsteer_jax.testing.judge_server import JudgeServer

CONVERSATION = [{"role": "user", "content": "Tell me about Paris."}]
FIVE = "helpfulness:3.5,correctness:3.0,coherence:4.0,complexity:1.5,verbosity:2.0"


def test_reward_replies():
  assert parse_reward("reward:-17.25") == -17.25
  # 0.65*3.5 + 0.8*3.0 + 0.45*4.0 + 0.55*1.5 - 0.4*2.0, by hand: 2.275 + 2.4 + 1.8 + 0.825 - 0.8
  assert parse_reward(FIVE) == pytest.approx(6.5)
  assert parse_reward(FIVE, "correctness") == 3.0
  with pytest.raises(ValueError, match="lacks the weighted attribute"):
    parse_reward("helpfulness:3,correctness:2")
  with pytest.raises(ValueError, match="not name:value"):
    parse_reward("-3.5")


def _reply(top: list[tuple[str, float]], text: str = "3") -> dict:
  alternatives = [{"token": t, "logprob": lp} for t, lp in top]
  first = {"token": top[0][0] if top else text, "logprob": top[0][1] if top else 0.0, "top_logprobs": alternatives}
  return {"choices": [{"message": {"content": text}, "logprobs": {"content": [first]} if top else None}]}


def test_judge_scores_are_expected_digits():
  # p(4) = 0.6, p(3) = 0.3, p(" x") ignored, p(2) = 0.1 -> 0.6*4 + 0.3*3 + 0.1*2 = 3.5
  top = [("4", math.log(0.6)), (" 3", math.log(0.3)), ("x", math.log(0.05)), ("2", math.log(0.1))]
  assert judge_score(_reply(top)) == pytest.approx(3.5)
  assert judge_score(_reply([], text=" 2")) == 2.0
  with pytest.raises(ValueError, match="no score digit"):
    judge_score(_reply([], text="great"))


def test_the_reward_selector_sends_nims_request_shape():
  def reward(messages):
    return f"reward:{len(messages[-1]['content'])}"

  with JudgeServer(reply=reward) as server:
    selector = RemoteRewardSelector(Endpoint(EndpointSettings(server.base_url, "nvidia/select", max_concurrency=2)))
    scores = selector.score([(CONVERSATION, "short"), (CONVERSATION, "a longer answer"), (CONVERSATION, "mid one")])
    assert scores == [5.0, 15.0, 7.0]
    body = server.requests[0]["body"]
    assert body["model"] == "nvidia/select"
    assert body["messages"][:-1] == CONVERSATION and body["messages"][-1]["role"] == "assistant"
    assert not selector.shares_prefill and selector.model_key == selector.served_by
    assert selector.served_by == f"openai:{server.base_url}#nvidia/select"


def test_the_judge_selector_continues_the_prefilled_answer():
  with JudgeServer(reply=lambda messages: "4") as server:
    selector = RemoteJudgeSelector(Endpoint(EndpointSettings(server.base_url, "judge")), "plain")
    # The loopback server's top alternatives are "m" and "M": no digit, so the written one counts.
    assert selector.score([(CONVERSATION, "Paris is the capital of France.")]) == [4.0]
    body = server.requests[0]["body"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["messages"][-1]["role"] == "assistant"
