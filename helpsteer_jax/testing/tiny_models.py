"""A tiny random Llama with SmolLM2's real tokenizer: the search's plumbing at test speed."""

import pytest
from flax import nnx

from helpsteer_jax.checkpoints.embedded import embedded_model_path
from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.llama import Llama

VOCAB = 49152


def smollm2_tokenizer():
  try:
    path = embedded_model_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  return tokenizer_from_gguf(path)


def tiny_chat_model(seed: int = 0, tie_word_embeddings: bool = True) -> Llama:
  """With tied embeddings a random model mostly repeats its prompt's last token (newlines after a
  chat prompt); untied, it writes varied words, so that its feedback is kept and edits run."""
  config = get_preset(
    "tiny",
    vocab_size=VOCAB,
    max_position_embeddings=4096,
    tie_word_embeddings=tie_word_embeddings,
    bos_token_id=1,
    eos_token_id=(2,),
  )
  return Llama(config, rngs=nnx.Rngs(seed))
