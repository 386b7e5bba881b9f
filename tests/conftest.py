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
# Bucket tests talk to a local GCS emulator (helpsteer_jax/testing/gcs_emulator.py) only: anonymous
# gcsfs, a fixed token for tensorstore, and no Google credential lookup that would probe a metadata server.
for _name, _value in {
  "FSSPEC_GS_TOKEN": "anon",
  "FSSPEC_GCS_TOKEN": "anon",
  "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
  "NO_GCE_CHECK": "True",
  "GCE_METADATA_HOST": "127.0.0.1:9",
  "GCE_METADATA_IP": "127.0.0.1:9",
}.items():
  os.environ.setdefault(_name, _value)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

pytest_plugins = ["helpsteer_jax.testing.fixtures"]
