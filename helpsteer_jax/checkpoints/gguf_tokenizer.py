"""A `tokenizers.Tokenizer` rebuilt from a GGUF's `tokenizer.ggml.*` metadata.

A GGUF has no tokenizer.json: it stores the byte-level BPE vocabulary (already spelled in GPT-2's
byte alphabet), the merges, a token type per id (3 = control, 4 = user-defined), the special ids
and `tokenizer.ggml.pre`, the name of the pre-tokenizer the merges were learned with. Here those
become the same pipeline the model's own tokenizer.json describes.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from helpsteer_jax.checkpoints.gguf_reader import GGUFFile
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError

log = logging.getLogger(__name__)

CONTROL, USER_DEFINED = 3, 4

# Llama-3's split regex (from its tokenizer.json): contractions, letters with one leading
# non-letter, numbers in groups of up to three digits, punctuation runs, newlines, spaces.
LLAMA3_SPLIT_REGEX = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx")
_GPT2_PRE = ("default", "gpt2", "gpt-2")


def pre_tokenizer_for(pre: Optional[str], path: str) -> pre_tokenizers.PreTokenizer:
  """The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` name stands for."""
  if pre == "smollm":
    # As SmolLM2's tokenizer.json: every digit alone, then GPT-2's byte-level split.
    return pre_tokenizers.Sequence(
      [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
      ]
    )
  if pre in _LLAMA3_PRE:
    return pre_tokenizers.Sequence(
      [
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
    )
  if pre is not None and pre not in _GPT2_PRE:
    log.warning("%s: unknown tokenizer.ggml.pre %r; splitting text as GPT-2 does", path, pre)
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def build_gguf_tokenizer(f: GGUFFile) -> Tokenizer:
  """The bare `tokenizers.Tokenizer` (no transformers wrapper)."""
  kind = f.metadata("tokenizer.ggml.model", None)
  if kind != "gpt2":
    raise CheckpointError(
      f"{f.path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2', as Llama-3 and "
      "SmolLM2 use) can be rebuilt"
    )
  tokens: list[str] = f.metadata("tokenizer.ggml.tokens")
  merges: list[str] = f.metadata("tokenizer.ggml.merges")
  types: list[int] = f.metadata("tokenizer.ggml.token_type", None) or [1] * len(tokens)
  if len(types) != len(tokens):
    raise CheckpointError(f"{f.path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
  vocab = {token: i for i, token in enumerate(tokens)}
  pairs = []
  for i, merge in enumerate(merges):
    parts = merge.split(" ")
    if len(parts) != 2:
      raise CheckpointError(f"{f.path}: tokenizer.ggml.merges[{i}] = {merge!r} is not 'left right'")
    pairs.append((parts[0], parts[1]))
  tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizer_for(f.metadata("tokenizer.ggml.pre", None), f.path)
  tok.decoder = decoders.ByteLevel()
  # Control tokens (<|im_start|>, <|eot_id|>, ...) are matched whole and skipped when decoding with
  # skip_special_tokens; user-defined ones are matched whole but are ordinary text.
  tok.add_special_tokens(
    [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
  )
  tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED])
  tok.post_processor = _post_processor(f, tokens)
  return tok


def _post_processor(f: GGUFFile, tokens: list[str]) -> processors.PostProcessor:
  """Byte-level offsets, plus BOS/EOS around every encoded text when the file asks for them."""
  steps: list[Any] = [processors.ByteLevel(trim_offsets=False)]
  specials = []
  single, pair = "$A:0", "$A:0 $B:1"
  for which in ("bos", "eos"):
    if not f.metadata(f"tokenizer.ggml.add_{which}_token", False):
      continue
    token = _token(f, tokens, which)
    if token is None:
      continue
    specials.append((token, tokens.index(token)))
    if which == "bos":
      single, pair = f"{token}:0 {single}", f"{token}:0 $A:0 {token}:1 $B:1"
    else:
      single, pair = f"{single} {token}:0", f"{pair} {token}:1"
  if specials:
    steps.append(processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials))
  return processors.Sequence(steps)


def _token(f: GGUFFile, tokens: list[str], which: str) -> Optional[str]:
  index = f.metadata(f"tokenizer.ggml.{which}_token_id", None)
  if index is None:
    return None
  if not 0 <= int(index) < len(tokens):
    raise CheckpointError(
      f"{f.path}: tokenizer.ggml.{which}_token_id = {index} is outside the {len(tokens)}-token vocabulary"
    )
  return tokens[int(index)]


def tokenizer_from_gguf(source: Any):
  """A `transformers.PreTrainedTokenizerFast` with the GGUF's chat template; None if it has no
  tokenizer. `source` is a path, a `gguf.GGUFReader` or a `GGUFFile`."""
  from transformers import PreTrainedTokenizerFast

  f = GGUFFile.of(source)
  if not f.has("tokenizer.ggml.tokens"):
    return None
  backend = build_gguf_tokenizer(f)
  tokens: list[str] = f.metadata("tokenizer.ggml.tokens")
  names = {"bos": "bos_token", "eos": "eos_token", "padding": "pad_token", "unknown": "unk_token"}
  specials = {arg: _token(f, tokens, key) for key, arg in names.items()}
  context = f.metadata(f"{f.architecture}.context_length", None)
  return PreTrainedTokenizerFast(
    tokenizer_object=backend,
    chat_template=f.metadata("tokenizer.chat_template", None),
    model_max_length=int(context) if context else int(1e30),
    clean_up_tokenization_spaces=False,
    **{k: v for k, v in specials.items() if v is not None},
  )
