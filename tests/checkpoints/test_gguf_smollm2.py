"""The embedded SmolLM2-135M-Instruct GGUF (Q4_1) against transformers loading the same file.

Both sides dequantize the same blocks to float32, so the logits agree to float rounding (the
quantization error is the same on both sides) and greedy continuations are identical.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.checkpoints.gguf import load_gguf
from helpsteer_jax.checkpoints.tokenizers import stop_token_ids
from helpsteer_jax.models.config import get_preset
from helpsteer_jax.sampling.generate import sampling_settings
from helpsteer_jax.sampling.sampler import sample_tokens

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

LOGITS_TOLERANCE = 1e-3
NEW_TOKENS = 64

CHATS = [
  [{"role": "user", "content": "What is the capital of France?"}],
  [{"role": "user", "content": "Write a haiku about the ocean."}],
  [{"role": "user", "content": "Explain recursion to a five-year-old in two sentences."}],
  [
    {
      "role": "system",
      "content": "You are a careful editor. Keep the author's voice, fix only grammar "
      "and spelling, and list every change you made after the text.",
    },
    {
      "role": "user",
      "content": "Please fix this paragraph: 'Their going to the libary tomorow, "
      "because they has a exam on friday and they dont want to fail it "
      "again like last year when they forgets to study the last chapter.'",
    },
  ],
  [
    {"role": "system", "content": "You are a pirate. Stay in character."},
    {"role": "user", "content": "How are you today?"},
  ],
  [
    {"role": "user", "content": "List three prime numbers greater than 20."},
    {"role": "assistant", "content": "23, 29 and 31."},
    {"role": "user", "content": "Now add them up: 23 + 29 + 31 = ?"},
  ],
]


@pytest.fixture(scope="module")
def ours(embedded_gguf_path):
  return load_gguf(embedded_gguf_path, show_progress=False)


@pytest.fixture(scope="module")
def reference(embedded_gguf_path):
  torch = pytest.importorskip("torch")
  pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(embedded_gguf_path), gguf_file=os.path.basename(embedded_gguf_path), dtype=torch.float32
  )
  return model.eval()


@pytest.fixture(scope="module")
def prompts(ours) -> list[list[int]]:
  _, tokenizer = ours
  out = []
  for chat in CHATS:
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    out.append(tokenizer(text, add_special_tokens=False).input_ids)
  return out


def reference_logits(reference, ids: list[int]) -> np.ndarray:
  import torch

  with torch.no_grad():
    return reference(torch.tensor([ids])).logits[0].numpy()


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  t = max(len(p) for p in prompts)
  ids = np.full((len(prompts), t), pad_id, np.int32)
  mask = np.zeros((len(prompts), t), bool)
  for i, p in enumerate(prompts):
    ids[i, t - len(p) :] = p
    mask[i, t - len(p) :] = True
  return ids, mask


def test_header_parser_agrees_with_gguf_package(embedded_gguf_path):
  import gguf

  from helpsteer_jax.checkpoints.gguf_reader import GGUFFile

  ours, theirs = GGUFFile(embedded_gguf_path), gguf.GGUFReader(embedded_gguf_path)
  for key, field in theirs.fields.items():
    if not key.startswith("GGUF."):  # the reader's own entries for the header counts
      assert ours.metadata(key) == field.contents(), key
  assert len(ours.metadata("tokenizer.ggml.tokens")) == 49152
  for t in theirs.tensors:
    mine = ours.tensors[t.name]
    assert (mine.tensor_type, mine.shape) == (t.tensor_type, tuple(int(d) for d in t.shape)), t.name
    assert mine.offset == t.data_offset and mine.data.shape == t.data.shape
  by_name = {t.name: t for t in theirs.tensors}
  for name in ("token_embd.weight", "blk.3.attn_k.weight", "output_norm.weight"):
    np.testing.assert_array_equal(ours.tensors[name].data, by_name[name].data, err_msg=name)


def test_config_is_smollm2_135m(ours):
  model, tokenizer = ours
  preset = get_preset("smollm2_135m")
  for field in (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "rope_theta",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "rope_scaling",
  ):
    assert getattr(model.config, field) == getattr(preset, field), field
  assert model.config.param_dtype == "float32"  # a Q4_1 file loads as float32
  assert model.config.num_params() == 134_515_008
  assert tokenizer.eos_token == "<|im_end|>" and stop_token_ids(tokenizer) == (2,)


def test_logits_match_transformers(ours, reference, prompts, record_property):
  """One unpadded prompt, then all prompts as one left-padded batch (padding must neither shift
  positions nor receive attention): every real position matches transformers' unpadded run."""
  model, tokenizer = ours
  wants = [reference_logits(reference, p) for p in prompts]
  single = np.asarray(model(jnp.asarray([prompts[0]], jnp.int32)))[0]
  assert single.shape == wants[0].shape == (len(prompts[0]), model.config.vocab_size)
  diffs = [float(np.abs(single - wants[0]).max())]
  ids, mask = left_pad(prompts, tokenizer.pad_token_id)
  batch = np.asarray(model(jnp.asarray(ids), input_mask=jnp.asarray(mask)))
  for i, (p, want) in enumerate(zip(prompts, wants)):
    got = batch[i, ids.shape[1] - len(p) :]
    diffs.append(float(np.abs(got - want).max()))
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=f"prompt {i}")
  worst = max(diffs)
  print(
    f"SmolLM2 GGUF: max |logits - transformers logits| = {worst:.3g} "
    f"(logits up to {max(np.abs(w).max() for w in wants):.1f})"
  )
  record_property("max_logits_diff", worst)
  assert worst <= LOGITS_TOLERANCE, f"max |logits diff| per run: {diffs}"


def _greedy_parity(ours, reference, prompts, new_tokens: int) -> list[str]:
  """The project's sampler, all prompts in one call, against transformers
  `generate(do_sample=False)` on each prompt alone: identical tokens up to the end of turn."""
  import torch

  model, tokenizer = ours
  assert len({len(p) for p in prompts}) == len(prompts), "prompts should differ in length"
  settings = sampling_settings(tokenizer, max_new_tokens=new_tokens, temperature=0.0)
  ours_tokens = [per_prompt[0] for per_prompt in sample_tokens(model, prompts, settings)]
  stops = set(settings.stop_token_ids)
  texts = []
  for i, ids in enumerate(prompts):
    with torch.no_grad():
      out = reference.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id,
      )
    want = out[0, len(ids) :].tolist()
    assert want, f"prompt {i}: transformers generated nothing"
    if want[-1] in stops:  # our sampler returns the answer without its stop token
      want = want[:-1]
    assert ours_tokens[i] == want, (
      f"prompt {i}: ours {tokenizer.decode(ours_tokens[i])!r} vs transformers {tokenizer.decode(want)!r}"
    )
    texts.append(tokenizer.decode(want, skip_special_tokens=True))
  print(
    f"greedy parity: prompt lengths {[len(p) for p in prompts]}, "
    f"identical answers of {[len(t) for t in ours_tokens]} tokens"
  )
  return texts


@pytest.mark.slow
def test_greedy_continuations_match_transformers(ours, reference, prompts):
  """Six chat prompts of different lengths in one call, 64 new tokens (about 100 s here)."""
  texts = _greedy_parity(ours, reference, prompts, NEW_TOKENS)
  assert "Paris" in texts[0]  # the quantized model still knows its facts


def test_greedy_continuations_match_transformers_short(ours, reference, prompts):
  """The same path at a smaller size for the default suite: three of the prompts, 16 new tokens."""
  texts = _greedy_parity(ours, reference, [prompts[0], prompts[2], prompts[4]], 16)
  assert "Paris" in texts[0]
