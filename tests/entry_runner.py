"""Runs an entry point in a subprocess; a failure shows the end of what it printed.

`subprocess.run(check=True, capture_output=True)` raises with the output hidden inside the
exception, so a crash in CI (a signal, an XLA abort) would leave nothing to read.
"""

import subprocess


def run_entry(cmd: list[str], *, cwd, env: dict, timeout: float, tail_chars: int = 6000) -> str:
  """Runs `cmd`; returns its combined stdout and stderr, or fails the test with their last part."""
  proc = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
  if proc.returncode != 0:
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    raise AssertionError(f"{' '.join(map(str, cmd))}\nfailed with {how}; last output:\n"
                         f"{proc.stdout[-tail_chars:]}")
  return proc.stdout
