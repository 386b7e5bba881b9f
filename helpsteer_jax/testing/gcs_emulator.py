"""A GCS emulator (the gcp-storage-emulator package, which serves the JSON API that gcsfs and
tensorstore speak, with the two pieces it lacks added by gcs_emulator_server.py) started on
127.0.0.1 for one test and stopped after it."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

BUCKET = "helpsteer-test"


@dataclasses.dataclass(frozen=True)
class Emulator:
  port: int
  bucket_url: str
  env: dict[str, str]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env(port: int) -> dict[str, str]:
  """Points gcsfs (STORAGE_EMULATOR_HOST) and tensorstore (TENSORSTORE_GCS_HTTP_URL), so Orbax
  too, at the emulator; the credential settings that keep them off any real service are set for
  the whole suite in tests/conftest.py."""
  url = f"http://127.0.0.1:{port}"
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url}


@contextlib.contextmanager
def running_emulator(bucket: str = BUCKET, timeout: float = 30.0) -> Iterator[Emulator]:
  port = _free_port()
  log = tempfile.TemporaryFile()
  proc = subprocess.Popen(
    [sys.executable, "-m", "helpsteer_jax.testing.gcs_emulator_server", f"--port={port}", f"--bucket={bucket}"],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  try:
    deadline = time.monotonic() + timeout
    while True:
      if proc.poll() is not None:
        log.seek(0)
        raise RuntimeError(f"the GCS emulator exited: {log.read().decode()[-2000:]}")
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
          break
      if time.monotonic() > deadline:
        raise TimeoutError(f"the GCS emulator did not listen on port {port} in {timeout} s")
      time.sleep(0.1)
    yield Emulator(port, f"gs://{bucket}", emulator_env(port))
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    log.close()
