"""A persistent compilation cache for every command: what one run compiles, later runs load.

On a 2-core CPU the README's search compiles ~50 programs, ~30 s of its ~120 s, most of it the
two unrolled decode programs; on an accelerator a 70B model's programs take minutes. JAX can keep
compiled programs on disk, keyed by the program, its compile options and the device kind, and
load them instead of compiling again; every `python -m helpsteer_jax.<command>` turns that on
(`entry_point.run`).

Where: `$HELPSTEER_JAX_COMPILATION_CACHE` (a directory; `off`, `0`, `none` or empty for no cache),
else `$XDG_CACHE_HOME/helpsteer_jax/xla` (by default `~/.cache/helpsteer_jax/xla`). A
`JAX_COMPILATION_CACHE_DIR` set in the environment wins over both and is used as it is.

The entries go into a subdirectory named after this machine's processor and instruction set
(`machine_tag`): JAX keys CPU programs by the device kind "cpu" alone, and a home directory
shared by machines of different CPUs (a cluster's login and compute nodes) would otherwise hand one
machine code compiled for the other. XLA's loader also refuses an entry built for other CPU
features and compiles the program instead, so a wrong entry costs a compilation, not a crash.

Only programs that took at least `MIN_COMPILE_SECONDS` to compile are kept: loading an entry is
not free either, and a program of a few ops compiles as fast as it loads. The directory is
bounded at `MAX_BYTES`, least recently used entries out first (JAX's eviction locks the directory
with the `filelock` package, which the Hugging Face hub client brings; without it, no bound).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
from collections.abc import Mapping
from typing import Optional

ENV = "HELPSTEER_JAX_COMPILATION_CACHE"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
OFF = ("", "0", "off", "none", "false", "no")
MIN_COMPILE_SECONDS = 0.5
MAX_BYTES = 4 << 30


def default_directory(environ: Mapping[str, str] = os.environ) -> str:
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "helpsteer_jax", "xla")


def machine_tag() -> str:
  """The processor and its instruction set, as a short name: `x86_64-<12 hex digits>`."""
  described = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().splitlines()
    pick = lambda key: next((l.split(":", 1)[1].strip() for l in lines if l.startswith(key)), "")
    described = f"{pick('model name')}|{pick('flags') or pick('Features')}"
  except OSError:
    pass
  digest = hashlib.sha256(described.encode()).hexdigest()[:12]
  return f"{platform.machine() or 'cpu'}-{digest}"


def directory_from_env(environ: Mapping[str, str] = os.environ) -> Optional[str]:
  """The cache directory the environment asks for, None for no cache. `JAX_COMPILATION_CACHE_DIR`,
  when set, is JAX's own setting: the caller leaves it to JAX."""
  value = environ.get(ENV)
  if value is None:
    return default_directory(environ)
  if value.strip().lower() in OFF:
    return None
  return os.path.expanduser(value)


def enable(environ: Mapping[str, str] = os.environ) -> Optional[str]:
  """Turns the cache on as the environment says (before any program compiles); returns the
  directory used, or None when there is none. A directory that cannot be created leaves the cache
  off rather than failing the command."""
  import jax

  if environ.get(JAX_ENV):
    return environ[JAX_ENV]  # JAX read it at import
  directory = directory_from_env(environ)
  if directory is None:
    return None
  # By the host's processor on every backend: the backend is not started here (a multi-host run
  # still has to initialize), and accelerator entries are keyed by their device kind as well.
  directory = os.path.join(directory, machine_tag())
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ and importlib.util.find_spec("filelock"):
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return directory
