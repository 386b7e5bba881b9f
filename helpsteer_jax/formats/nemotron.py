"""The `nemotron` layouts: the inputs of NVIDIA's released HelpSteer3 models.

What is published (the model cards' Quick Start code, read with transformers):
- Llama-3.3-Nemotron-70B-Feedback: the conversation's turns, the response as the next assistant
  turn, then a user turn that asks for the evaluation (`FEEDBACK_INSTRUCTION`), rendered with the
  generation prompt and sampled at temperature 0.7.
- Llama-3.3-Nemotron-70B-Select (and Llama-3.1-Nemotron-70B-Reward-HF): the conversation's turns
  and the response as the last assistant turn, rendered without a generation prompt; the score is
  the logit of vocabulary index 0 at the last position (`checkpoints.reward`, `logit_index=0`).
- Llama-3.3-Nemotron-70B-Edit: no input layout is published. This module refuses to invent one;
  the Edit role keeps the `plain` layout (docs/reproducing.md).

System turns of the conversation pass through as turns, as the chat template renders them.
"""

from __future__ import annotations

from collections.abc import Sequence

from helpsteer_jax.formats.messages import Conversation, Message, assistant, user
from helpsteer_jax.formats.plain import JUDGE_ANSWER_PREFIX, JUDGE_INSTRUCTION

# Every public copy of the Feedback model's card cuts its Quick Start instruction off after
# "Evaluate the response to the previous prompt in terms of how helpful it is". The rest of this
# text is the project's completion: it asks for the opening sentence HelpSteer3 feedback always
# has ("The response is {level} helpful", the card's annotation guideline) and the 2-10 sentence
# length of the annotators' feedback. Change it here once the full text is known; the Feedback SFT
# data builder and the search both read this one constant.
FEEDBACK_INSTRUCTION = (
  "Evaluate the response to the previous prompt in terms of how helpful it is overall. Start your "
  "evaluation with the statement - The response is {not / slightly / partially / mostly / "
  "perfectly} helpful. Then provide a brief explanation of the evaluation in 2 to 10 sentences."
)

EDIT_UNPUBLISHED = (
  "the input layout of NVIDIA's Llama-3.3-Nemotron-70B-Edit is not published, so there is no "
  "'nemotron' edit layout; use prompt_format='plain' for the edit role (see docs/reproducing.md)"
)


def _turns_then_response(conversation: Conversation, response: str) -> list[Message]:
  return list(conversation) + [assistant(response)]


def feedback_request(conversation: Conversation, response: str) -> list[Message]:
  return _turns_then_response(conversation, response) + [user(FEEDBACK_INSTRUCTION)]


def edit_request(conversation: Conversation, response: str, feedback: Sequence[str]) -> list[Message]:
  raise ValueError(EDIT_UNPUBLISHED)


def revision_request(conversation: Conversation, response: str) -> list[Message]:
  raise ValueError(EDIT_UNPUBLISHED)


def judge_request(conversation: Conversation, response: str) -> list[Message]:
  """The policy as a generative judge, in the Feedback model's multi-turn shape: the response as
  an assistant turn, the rating question as the next user turn, the answer pre-filled."""
  return _turns_then_response(conversation, response) + [user(JUDGE_INSTRUCTION), assistant(JUDGE_ANSWER_PREFIX)]


def select_request(conversation: Conversation, response: str) -> list[Message]:
  return _turns_then_response(conversation, response)
