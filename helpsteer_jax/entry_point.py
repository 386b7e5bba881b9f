"""What every `python -m helpsteer_jax.<command>` shares: absl's `app.run`, except that `--help`
prints the command's own docstring, flags and config fields (of `--config=FILE` given
beside it, else the command's default config) and exits 0 (absl's help flag exits 1, which reads
as a failure in scripts), and needs no other flag; and that no command takes positional
arguments, so a stray word (an unquoted `--prompt=What is the capital of France` leaves `is the
capital of France` behind) is a usage error instead of being silently dropped; that a bucket URL
in any flag or config value (gs://...) whose client library is missing stops the command at once
with one line naming the package; and that programs compiled by one run are kept on disk for the
next (compilation_cache.py)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Any, Optional

from absl import app, flags

from helpsteer_jax import compilation_cache
from helpsteer_jax.storage import paths as storage_paths

HELP_ARGS = ("-h", "--help", "--helpshort", "-?")


def wants_help(argv: list[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


def reject_positional(argv: list[str]) -> None:
  """Raises `app.UsageError` naming the words after the command that are not flags."""
  if len(argv) > 1:
    raise app.UsageError(
      f"unexpected arguments {argv[1:]}: this command takes flags only "
      '(--name=value); quote a value that has spaces, e.g. --prompt="What is 2+2?"'
    )


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


def _config_file_arg(argv: list[str]) -> Optional[str]:
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def help_config(argv: list[str], module: Any) -> tuple[Any, str]:
  """(config, where it came from) for `--help`: the `--config=FILE[:ARG]` named beside it, else
  the command's default config (its module's `HELP_CONFIG`, a function), else (None, "")."""
  spec_arg = _config_file_arg(argv)
  if spec_arg:
    path, _, arg = spec_arg.partition(":")
    spec = importlib.util.spec_from_file_location("help_config", path)
    if spec is None or spec.loader is None:
      return None, ""
    config_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_module)
    return (config_module.get_config(arg) if arg else config_module.get_config()), spec_arg
  default = getattr(module, "HELP_CONFIG", None)
  if default is None:
    return None, ""
  return default(), "the default config"


def config_field_lines(config: Any, prefix: str = "") -> list[str]:
  """`  --config.name=value` for every leaf field of `config`, sorted by name."""
  lines = []
  for key, value in sorted(config.items()):
    name = f"{prefix}{key}"
    if hasattr(value, "items") and callable(value.items) and len(value):
      lines.extend(config_field_lines(value, name + "."))
    else:
      lines.append(f"  --config.{name}={value!r}")
  return lines


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` for the entry module that defines `main` and its flags."""
  if wants_help(sys.argv):
    module = sys.modules[main.__module__]
    print((module.__doc__ or "").strip())
    options = flags.FLAGS.module_help(module)
    if options:
      print(f"\nflags:\n{options}")
    config, source = help_config(sys.argv, module)
    if config is not None:
      print(f"\nconfig fields (--config.<name>=value), as {source} sets them:")
      print("\n".join(config_field_lines(config)))
    sys.exit(0)

  def checked_main(argv: list[str]) -> None:
    reject_positional(argv)
    check_storage_flags()
    compilation_cache.enable()
    main(argv)

  app.run(checked_main)
