"""`python -m helpsteer_jax.serve` started on a free port of 127.0.0.1 for a test or a benchmark,
and stopped (SIGTERM) after it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator


@dataclasses.dataclass
class Server:
  process: subprocess.Popen
  base_url: str  # http://127.0.0.1:PORT/v1
  log: tempfile._TemporaryFileWrapper

  def output(self) -> str:
    self.log.flush()
    with open(self.log.name, encoding="utf-8", errors="replace") as f:
      return f.read()


def server_env() -> dict[str, str]:
  """This process's environment for a server subprocess: offline, one CPU device."""
  return dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*flags: str, env: dict[str, str] | None = None, timeout: float = 300.0) -> Iterator[Server]:
  """The server with `flags`, once /health answers; SIGTERM at the end (a test may stop it first)."""
  port = free_port()
  log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
  process = subprocess.Popen(
    [sys.executable, "-m", "helpsteer_jax.serve", f"--port={port}", *flags],
    stdout=log,
    stderr=subprocess.STDOUT,
    env=env or dict(os.environ),
  )
  server = Server(process, f"http://127.0.0.1:{port}/v1", log)
  try:
    deadline = time.monotonic() + timeout
    while True:
      if process.poll() is not None:
        raise RuntimeError(f"the server exited with {process.returncode}:\n{server.output()[-4000:]}")
      try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
          if reply.status == 200:
            break
      except OSError:
        pass
      if time.monotonic() > deadline:
        raise TimeoutError(f"the server did not answer /health in {timeout} s:\n{server.output()[-4000:]}")
      time.sleep(0.5)
    yield server
  finally:
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
      try:
        process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    os.unlink(log.name)
