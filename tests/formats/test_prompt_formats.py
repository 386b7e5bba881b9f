"""Role prompt layouts (`formats/prompts.py`): the `nemotron` layouts render to the token ids of
the released models' own messages under `apply_chat_template`, and the Feedback SFT builder in a
layout trains on exactly the prompt tokens the search sends in that layout."""

import pytest

from helpsteer_jax.data.chat_encoding import ChatEncoder
from helpsteer_jax.data.examples import BuildStats
from helpsteer_jax.data.helpsteer3 import EditBuilder, EditQualityBuilder, FeedbackBuilder
from helpsteer_jax.data.rl_prompts import load_edit_prompts
from helpsteer_jax.data.sources import SourceSpec
from helpsteer_jax.formats import nemotron, plain, prompts
from helpsteer_jax.sampling.generate import encode_conversations
from helpsteer_jax.testing.helpsteer_rows import helpsteer_rows

CONVERSATIONS = [
  [{"role": "user", "content": "What is the distance between the Earth and the Sun?"}],
  [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is 17 * 23?"},
    {"role": "assistant", "content": "391."},
    {"role": "user", "content": "And 391 / 17?"},
  ],
]
RESPONSE = "The answer is 23."


def _template_ids(tokenizer, messages, **kw) -> list[int]:
  return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_nemotron_feedback_request_is_the_cards_messages(conversation, llama3_tokenizer):
  expected = list(conversation) + [
    {"role": "assistant", "content": RESPONSE},
    {"role": "user", "content": nemotron.FEEDBACK_INSTRUCTION},
  ]
  request = prompts.feedback_request(conversation, RESPONSE, prompt_format="nemotron")
  assert request == expected
  assert nemotron.FEEDBACK_INSTRUCTION.startswith(
    "Evaluate the response to the previous prompt in terms of how helpful it is"
  )
  # The search renders requests with the generation prompt, as the card's code does.
  assert encode_conversations(llama3_tokenizer, [request])[0] == _template_ids(
    llama3_tokenizer, expected, add_generation_prompt=True
  )


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_plain_layouts_are_one_user_turn_quoting_every_turn(conversation):
  (message,) = prompts.feedback_request(conversation, RESPONSE)
  assert message["role"] == "user"
  assert plain.render_conversation(conversation) in message["content"] and RESPONSE in message["content"]
  (edit,) = prompts.edit_request(conversation, RESPONSE, ["Be exact.", "Show the work."])
  assert "[Feedback 2]\nShow the work." in edit["content"]
  judge = prompts.judge_request(conversation, RESPONSE, "nemotron")
  assert judge[: len(conversation) + 1] == list(conversation) + [{"role": "assistant", "content": RESPONSE}]
  assert judge[-1] == {"role": "assistant", "content": prompts.JUDGE_ANSWER_PREFIX}


def test_unknown_and_unpublished_layouts_fail_by_name():
  with pytest.raises(ValueError, match=r"prompt_format='chatml'.*expected one of \('plain', 'nemotron'\)"):
    prompts.feedback_request(CONVERSATIONS[0], RESPONSE, prompt_format="chatml")
  with pytest.raises(ValueError, match="Nemotron-70B-Edit is not published"):
    prompts.edit_request(CONVERSATIONS[0], RESPONSE, ["x"], prompt_format="nemotron")
  with pytest.raises(ValueError, match="edit role: the input layout"):
    EditBuilder(prompt_format="nemotron")
  with pytest.raises(ValueError, match="edit role"):
    EditQualityBuilder(prompt_format="nemotron")
  with pytest.raises(ValueError, match="edit role"):
    load_edit_prompts(SourceSpec(path="unused.jsonl"), prompt_format="nemotron")


def test_feedback_sft_in_the_nemotron_layout_trains_on_the_searchs_tokens(bundled_data, llama3_tokenizer):
  row = helpsteer_rows(bundled_data, "helpsteer3_feedback")[0]
  examples = FeedbackBuilder(prompt_format="nemotron")(row, "row", BuildStats())
  assert examples
  encoder = ChatEncoder(llama3_tokenizer, max_length=16384)
  for example, tokenized in zip(examples, encoder.encode_many(examples)):
    # The example is the search's request plus the feedback as the assistant target.
    response = example.messages[-3]["content"]
    request = prompts.feedback_request(row["context"], response, prompt_format="nemotron")
    assert list(example.messages[:-1]) == request
    start = int(tokenized.loss_mask.argmax())
    assert tokenized.input_ids[:start].tolist() == encode_conversations(llama3_tokenizer, [request])[0]


def test_the_70b_feedback_recipe_trains_on_the_layout_the_70b_search_sends():
  import importlib.util
  import pathlib

  root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
  spec = importlib.util.spec_from_file_location("feedback_sft", root / "feedback_sft.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("size=70b")
  assert config.data.builder.prompt_format == config.eval_data.builder.prompt_format == "nemotron"
  assert module.get_config("tiny").data.builder.prompt_format == "plain"
  from helpsteer_jax.scaling.config import sized_config

  assert sized_config("70b").feedback_model.prompt_format == "nemotron"
