"""What every `python -m helpsteer_jax.<command>` shares: absl's `app.run`, except that `--help`
prints the command's own docstring and flags and exits 0 (absl's help flag exits 1, which reads
as a failure in scripts), and needs no other flag; and that no command takes positional
arguments, so a stray word (an unquoted `--prompt=What is the capital of France` leaves `is the
capital of France` behind) is a usage error instead of being silently dropped; that a bucket URL
in any flag or config value (gs://...) whose client library is missing stops the command at once
with one line naming the package; and that programs compiled by one run are kept on disk for the
next (compilation_cache.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from absl import app, flags

from helpsteer_jax import compilation_cache
from helpsteer_jax.storage import paths as storage_paths

HELP_ARGS = ("-h", "--help", "--helpshort", "-?")


def wants_help(argv: list[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


def reject_positional(argv: list[str]) -> None:
  """Raises `app.UsageError` naming the words after the command that are not flags."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: this command takes flags only "
                         "(--name=value); quote a value that has spaces, e.g. --prompt=\"What is 2+2?\"")


def _leaves(value: Any) -> Iterator[Any]:
  """Every leaf of a flag value (a config's nested fields included)."""
  if hasattr(value, "items") and callable(value.items):
    for _, item in value.items():
      yield from _leaves(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _leaves(item)
  else:
    yield value


def check_storage_flags() -> None:
  """Exits with one line when a flag or config value is a bucket URL without its client."""
  try:
    storage_paths.check_paths(_leaves(flags.FLAGS.flag_values_dict()))
  except storage_paths.StorageError as e:
    sys.exit(f"error: {e}")


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` for the entry module that defines `main` and its flags."""
  if wants_help(sys.argv):
    module = sys.modules[main.__module__]
    print((module.__doc__ or "").strip())
    options = flags.FLAGS.module_help(module)
    if options:
      print(f"\nflags:\n{options}")
    sys.exit(0)

  def checked_main(argv: list[str]) -> None:
    reject_positional(argv)
    check_storage_flags()
    compilation_cache.enable()
    main(argv)

  app.run(checked_main)
