"""Reward models stored as a causal LM (NVIDIA's Select and Reward-HF): the reward is the logit of
vocabulary index 0 at the last position of the chat-templated conversation plus the response.

A tiny random transformers `LlamaForCausalLM` with the real Llama-3 tokenizer stands in for
Llama-3.3-Nemotron-70B-Select: its `lm_head` row 0 is the reward head. The project's
`RewardModelSelector` must score as transformers' `logits[0, -1, 0]` on
`apply_chat_template(conversation + [response], add_generation_prompt=False)`, and as the
card's Quick Start code (`generate(max_new_tokens=1, output_scores=True)`, `scores[0][0][0]`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpsteer_jax.checkpoints.reward import (
  LOGIT_INDEX_KEY,
  load_reward_model,
  reward_labels,
  save_reward_model,
)
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.formats import prompts
from helpsteer_jax.scoring.selectors import RewardModelSelector

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

TOL = 1e-4
VOCAB = 128256  # the Llama-3 tokenizer's

CONVERSATIONS = [
  (
    [{"role": "user", "content": "What is the distance between the Earth and the Sun?"}],
    "The distance from Earth to the Sun is 93 million miles.",
  ),
  (
    [
      {"role": "user", "content": "Name a prime number."},
      {"role": "assistant", "content": "Seven."},
      {"role": "user", "content": "A larger one, please."},
    ],
    "Ninety-seven is prime.",
  ),
  (
    [
      {"role": "system", "content": "Answer in one short sentence."},
      {"role": "user", "content": "Why is the sky blue?"},
    ],
    "Air scatters blue light more than red light.",
  ),
]


def _hf_select_model(seed: int = 0):
  config = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128009,
    torch_dtype="float32",
  )
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():  # a reward head of a clearly non-zero scale in row 0
    model.lm_head.weight[0] = torch.randn(config.hidden_size) * 2.0
  return model


@pytest.fixture(scope="module")
def select_folder(tmp_path_factory, llama3_tokenizer):
  folder = tmp_path_factory.mktemp("select")
  model = _hf_select_model()
  model.save_pretrained(folder, safe_serialization=True)
  llama3_tokenizer.save_pretrained(folder)
  return folder, model


def _hf_scores(model, tokenizer, items) -> list[float]:
  out = []
  for conversation, response in items:
    ids = tokenizer.apply_chat_template(
      list(conversation) + [{"role": "assistant", "content": response}],
      tokenize=True,
      add_generation_prompt=False,
      return_tensors="pt",
      return_dict=True,
    )["input_ids"]
    with torch.no_grad():
      out.append(float(model(ids).logits[0, -1, 0]))
  return out


def test_select_layout_scores_like_transformers(select_folder, llama3_tokenizer):
  folder, hf_model = select_folder
  rm, tokenizer = load_reward_model(str(folder), logit_index=0, show_progress=False)
  assert rm.num_outputs == 1 and reward_labels(str(folder), logit_index=0) == ("reward",)
  selector = RewardModelSelector(rm, tokenizer, prompt_format="nemotron")
  ours = selector.score(CONVERSATIONS)
  theirs = _hf_scores(hf_model, llama3_tokenizer, CONVERSATIONS)
  np.testing.assert_allclose(ours, theirs, atol=TOL)
  assert len(set(np.round(theirs, 3))) == len(theirs)  # the rows really differ

  # The card's Quick Start: one generated token, its (unprocessed, greedy) scores at index 0.
  conversation, response = CONVERSATIONS[0]
  encoded = llama3_tokenizer.apply_chat_template(
    conversation + [{"role": "assistant", "content": response}],
    tokenize=True,
    add_generation_prompt=False,
    return_tensors="pt",
    return_dict=True,
  )
  out = hf_model.generate(
    encoded["input_ids"],
    attention_mask=encoded["attention_mask"],
    max_new_tokens=1,
    return_dict_in_generate=True,
    output_scores=True,
    do_sample=False,
    pad_token_id=llama3_tokenizer.pad_token_id,
  )
  assert float(out.scores[0][0][0]) == pytest.approx(ours[0], abs=TOL)


def test_select_layout_round_trips(select_folder, tmp_path):
  folder, hf_model = select_folder
  rm, tokenizer = load_reward_model(str(folder), logit_index=0, show_progress=False)
  out = tmp_path / "exported"
  save_reward_model(rm, tokenizer, str(out), layout="causal_lm", show_progress=False)
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["LlamaForCausalLM"] and config[LOGIT_INDEX_KEY] == 0

  # transformers reads the export as a causal LM whose logit 0 is the same reward.
  reloaded_hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  np.testing.assert_allclose(
    _hf_scores(reloaded_hf, tokenizer, CONVERSATIONS), _hf_scores(hf_model, tokenizer, CONVERSATIONS), atol=TOL
  )
  # Ours reloads it without being told the index (config.json records it), bit for bit.
  again, _ = load_reward_model(str(out), show_progress=False)
  np.testing.assert_array_equal(np.asarray(again.head[...]), np.asarray(rm.head[...]))
  selector = RewardModelSelector(again, tokenizer, prompt_format="nemotron")
  np.testing.assert_allclose(
    selector.score(CONVERSATIONS), RewardModelSelector(rm, tokenizer).score(CONVERSATIONS), atol=1e-6
  )


def test_layout_errors(select_folder, tmp_path):
  folder, _ = select_folder
  with pytest.raises(CheckpointError, match="loads with logit_index=0"):
    load_reward_model(str(folder), show_progress=False)
  with pytest.raises(CheckpointError, match=r"logit_index=128256; expected a vocabulary index"):
    load_reward_model(str(folder), logit_index=VOCAB, show_progress=False)
  rm, tokenizer = load_reward_model(str(folder), logit_index=0, show_progress=False)
  save_reward_model(rm, tokenizer, str(tmp_path / "seqcls"), show_progress=False)
  with pytest.raises(CheckpointError, match="is for reward models stored as a causal LM"):
    load_reward_model(str(tmp_path / "seqcls"), logit_index=0, show_progress=False)
  with pytest.raises(ValueError, match="layout='banana'"):
    save_reward_model(rm, tokenizer, str(tmp_path / "x"), layout="banana")


@pytest.mark.parametrize("conversation,response", CONVERSATIONS)
def test_select_request_renders_as_the_card(conversation, response, select_folder, llama3_tokenizer):
  messages = prompts.select_request(conversation, response, "nemotron")
  assert messages == list(conversation) + [{"role": "assistant", "content": response}]
  rm, tokenizer = load_reward_model(str(select_folder[0]), logit_index=0, show_progress=False)
  selector_ids = RewardModelSelector(rm, tokenizer, prompt_format="nemotron").encode(conversation, response)
  expected = llama3_tokenizer.apply_chat_template(
    list(conversation) + [{"role": "assistant", "content": response}],
    tokenize=True,
    add_generation_prompt=False,
    return_dict=True,
  )["input_ids"]
  assert selector_ids == list(expected)


def test_convert_writes_select_as_a_sequence_classifier(select_folder, tmp_path):
  from helpsteer_jax.convert import convert_checkpoint

  folder, hf_model = select_folder
  out = tmp_path / "select_seqcls"
  convert_checkpoint(str(folder), str(out), reward_logit_index=0)
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["LlamaForSequenceClassification"]
  classifier = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  for conversation, response in CONVERSATIONS:
    ids = tokenizer.apply_chat_template(
      list(conversation) + [{"role": "assistant", "content": response}],
      tokenize=True,
      add_generation_prompt=False,
      return_tensors="pt",
      return_dict=True,
    )["input_ids"]
    with torch.no_grad():
      want = float(hf_model(ids).logits[0, -1, 0])
      got = float(classifier(ids).logits[0, 0])
    assert got == pytest.approx(want, abs=TOL)


def test_shared_prefill_scores_as_batches_and_computes_each_conversation_once(select_folder, llama3_tokenizer):
  folder, hf_model = select_folder
  rm, tokenizer = load_reward_model(str(folder), logit_index=0, show_progress=False)
  responses = ["Yes.", "No, not quite: it is more subtle than that.", "Perhaps.", "It depends on the day."]
  items = [(conversation, response) for conversation, _ in CONVERSATIONS for response in responses]
  batched = RewardModelSelector(rm, tokenizer, prompt_format="nemotron").score(items)
  # Chunks of 16: every conversation spans several, which its four candidates share.
  selector = RewardModelSelector(rm, tokenizer, prompt_format="nemotron", shared_prefill=True, prefill_chunk=16)
  shared = selector.score(items)
  np.testing.assert_allclose(shared, batched, atol=1e-5)
  np.testing.assert_allclose(shared, _hf_scores(hf_model, llama3_tokenizer, items), atol=TOL)
  counts = selector.prefill.counts
  conversation_tokens = sum(selector.conversation_end(c, selector.encode(c, r)) for c, r in items)
  # Each conversation's part is computed for its first candidate only; the other three copy it.
  assert counts.reused_tokens == sum(
    selector.conversation_end(c, selector.encode(c, r)) for c, r in items if r != responses[0]
  )
  assert counts.computed_tokens + counts.reused_tokens == sum(len(selector.encode(c, r)) for c, r in items)
  assert 0 < counts.reused_tokens < conversation_tokens
