"""What every `python -m helpsteer_jax.<command>` shares: absl's `app.run`, except that `--help`
prints the command's own docstring and flags and exits 0 (absl's help flag exits 1, which reads
as a failure in scripts), and needs no other flag; and that no command takes positional
arguments, so a stray word (an unquoted `--prompt=What is the capital of France` leaves `is the
capital of France` behind) is a usage error instead of being silently dropped; and that programs
compiled by one run are kept on disk for the next (compilation_cache.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

from helpsteer_jax import compilation_cache

HELP_ARGS = ("-h", "--help", "--helpshort", "-?")


def wants_help(argv: list[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


def reject_positional(argv: list[str]) -> None:
  """Raises `app.UsageError` naming the words after the command that are not flags."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: this command takes flags only "
                         "(--name=value); quote a value that has spaces, e.g. --prompt=\"What is 2+2?\"")


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
    compilation_cache.enable()
    main(argv)

  app.run(checked_main)
