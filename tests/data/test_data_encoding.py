"""Chat-template tokenisation: the loss mask covers exactly the assistant output (decoded and
compared with the text), the prompt tokens are those the sampler gives the model, reward inputs
match the reward-model selector, and the truncation rules."""

import numpy as np
import pytest

from helpsteer_jax.data.chat_encoding import ChatEncoder, TemplateError
from helpsteer_jax.data.examples import BuildStats, ChatExample
from helpsteer_jax.data.helpsteer2 import AttributeConditionedSFTBuilder, AttributeRegressionBuilder
from helpsteer_jax.data.helpsteer3 import (
  EditBuilder,
  EditQualityBuilder,
  FeedbackBuilder,
  PreferenceBuilder,
)
from helpsteer_jax.sampling.generate import encode_conversations
from helpsteer_jax.testing.helpsteer_rows import helpsteer_rows

CHAT = (
  {"role": "system", "content": "You are a concise assistant."},
  {"role": "user", "content": "What is 17 * 23?"},
  {"role": "assistant", "content": "17 * 23 = 391."},
  {"role": "user", "content": "And 391 / 17?"},
  {"role": "assistant", "content": " It is 23. "},
)


def _runs(mask):
  """[(start, stop)] of the True runs of a bool vector."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
  return list(zip(edges[::2], edges[1::2]))


def _check_loss_text(tokenizer, tokenized, example, end_of_turn, trim):
  """Each masked run decodes to one loss turn's content plus the end-of-turn token, nothing else."""
  runs = _runs(tokenized.loss_mask)
  assert len(runs) == len(example.loss_turns)
  for (start, stop), turn in zip(runs, example.loss_turns):
    content = example.messages[turn]["content"]
    text = tokenizer.decode(tokenized.input_ids[start:stop].tolist(), skip_special_tokens=False)
    assert text == (content.strip() if trim else content) + end_of_turn


def test_smollm2_feedback_mask_and_prompt_tokens(bundled_data, smol_tokenizer):
  row = helpsteer_rows(bundled_data, "helpsteer3_feedback")[0]
  examples = FeedbackBuilder()(row, "row", BuildStats())
  encoder = ChatEncoder(smol_tokenizer, max_length=8192)
  for example, tokenized in zip(examples, encoder.encode_many(examples)):
    _check_loss_text(smol_tokenizer, tokenized, example, "<|im_end|>", trim=False)
    ((start, _),) = _runs(tokenized.loss_mask)
    # Everything before the output is exactly the sampler's prompt for that conversation, and
    # the example ends with the end-of-turn token (ChatML's trailing newline is not learned).
    prompt = encode_conversations(smol_tokenizer, [list(example.messages[:-1])])[0]
    assert tokenized.input_ids[:start].tolist() == prompt
    assert tokenized.input_ids[-1] == smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenized.loss_mask[-1]


def test_multi_turn_and_system_conditioning(bundled_data, smol_tokenizer, llama3_tokenizer):
  example = ChatExample(CHAT, loss_turns=(2, 4))
  for tokenizer, eot, trim in ((smol_tokenizer, "<|im_end|>", False), (llama3_tokenizer, "<|eot_id|>", True)):
    tokenized = ChatEncoder(tokenizer, 4096).encode(example)
    _check_loss_text(tokenizer, tokenized, example, eot, trim)
  row = helpsteer_rows(bundled_data, "helpsteer2_default")[0]
  (sft,) = AttributeConditionedSFTBuilder()(row, "row", BuildStats())
  tokenized = ChatEncoder(smol_tokenizer, 4096).encode(sft)
  _check_loss_text(smol_tokenizer, tokenized, sft, "<|im_end|>", trim=False)
  context = smol_tokenizer.decode(tokenized.input_ids[~tokenized.loss_mask].tolist())
  assert "helpfulness:3,correctness:4,coherence:4,complexity:2,verbosity:1" in context


def test_llama3_edit_mask_keeps_bos(bundled_data, llama3_tokenizer):
  row = helpsteer_rows(bundled_data, "helpsteer3_edit")[0]
  examples = EditBuilder()(row, "row", BuildStats())
  encoded = ChatEncoder(llama3_tokenizer, 8192).encode_many(examples)
  for example, tokenized in zip(examples, encoded):
    assert tokenized.input_ids[0] == llama3_tokenizer.bos_token_id
    _check_loss_text(llama3_tokenizer, tokenized, example, "<|eot_id|>", trim=True)
  # Six orders of the same feedback: same length, different prompts, identical outputs.
  assert len({len(t) for t in encoded}) == 1
  assert len({t.input_ids.tobytes() for t in encoded}) == 6


def test_reward_inputs_match_the_selector(bundled_data, smol_tokenizer):
  """Pairs and regression inputs are tokenised as RewardModelSelector tokenises what it scores."""

  def selector_ids(messages):
    text = smol_tokenizer.apply_chat_template(list(messages), tokenize=False)
    return smol_tokenizer.encode(text, add_special_tokens=False)

  encoder = ChatEncoder(smol_tokenizer, 8192)
  pairs = EditQualityBuilder()(helpsteer_rows(bundled_data, "helpsteer3_edit_quality")[0], "r", BuildStats())
  pairs += PreferenceBuilder()(helpsteer_rows(bundled_data, "helpsteer3_preference")[1], "r", BuildStats())
  for pair, tokenized in zip(pairs, encoder.encode_many(pairs)):
    assert tokenized.chosen.tolist() == selector_ids(pair.chosen)
    assert tokenized.rejected.tolist() == selector_ids(pair.rejected)
  row = helpsteer_rows(bundled_data, "helpsteer2_default")[0]
  (reg,) = AttributeRegressionBuilder()(row, "r", BuildStats())
  tokenized = encoder.encode(reg)
  assert tokenized.input_ids.tolist() == selector_ids(reg.messages)
  assert tokenized.targets.dtype == np.float32 and tokenized.targets.tolist() == [3, 4, 4, 2, 1]


def test_truncation_rules(bundled_data, smol_tokenizer, llama3_tokenizer):
  row = helpsteer_rows(bundled_data, "helpsteer3_feedback")[0]
  example = FeedbackBuilder()(row, "row", BuildStats())[0]
  full = ChatEncoder(smol_tokenizer, 8192).encode(example)
  output = int(full.loss_mask.sum())

  drop = ChatEncoder(smol_tokenizer, len(full) - 1, "drop")
  assert drop.encode(example) is None and drop.stats.counts["dropped_too_long"] == 1

  left = ChatEncoder(smol_tokenizer, output + 10, "left")
  cut = left.encode(example)
  assert len(cut) == output + 10 and left.stats.counts["truncated_left"] == 1
  # SmolLM2 declares <|im_start|> as its BOS token, which opens every sequence: it is kept, and
  # the prompt is cut from the left after it.
  assert full.input_ids[0] == smol_tokenizer.bos_token_id == cut.input_ids[0]
  assert cut.input_ids[1:].tolist() == full.input_ids[-(output + 9) :].tolist()
  assert int(cut.loss_mask.sum()) == output  # the output survives whole
  too_short = ChatEncoder(smol_tokenizer, output - 1, "left")
  assert too_short.encode(example) is None
  assert too_short.stats.counts["dropped_output_too_long"] == 1

  # Llama-3 sequences start with BOS: left truncation keeps it.
  llama = ChatEncoder(llama3_tokenizer, 8192).encode(example)
  kept = ChatEncoder(llama3_tokenizer, int(llama.loss_mask.sum()) + 20, "left").encode(example)
  assert kept.input_ids[0] == llama3_tokenizer.bos_token_id
  assert kept.input_ids[1:].tolist() == llama.input_ids[-(len(kept) - 1) :].tolist()

  pair = PreferenceBuilder()(helpsteer_rows(bundled_data, "helpsteer3_preference")[1], "r", BuildStats())[0]
  whole = ChatEncoder(smol_tokenizer, 8192).encode(pair)
  short = ChatEncoder(smol_tokenizer, len(whole.chosen) - 50, "left").encode(pair)
  assert short.chosen.tolist() == whole.chosen[:1].tolist() + whole.chosen[51:].tolist()
  assert short.rejected.tolist() == whole.rejected.tolist()  # already short enough


def test_template_that_rewrites_history_is_rejected(smol_tokenizer):
  import copy

  tokenizer = copy.copy(smol_tokenizer)
  # A template that drops earlier assistant turns (as some "thinking" templates do).
  tokenizer.chat_template = (
    "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
  )
  with pytest.raises(TemplateError, match="turn 4"):
    ChatEncoder(tokenizer, 4096).encode(ChatExample(CHAT, loss_turns=(2, 4), source="chat"))
