"""Runs an entry point in a subprocess; a failure shows the end of what it printed.

`subprocess.run(check=True, capture_output=True)` raises with the output hidden inside the
exception, so a crash in CI (a signal, an XLA abort) would leave nothing to read.
"""

import os
import subprocess


def run_entry(cmd: list[str], *, cwd, env: dict, timeout: float, tail_chars: int = 6000) -> str:
  """Runs `cmd`; returns its combined stdout and stderr, or fails the test with their last part."""
  proc = subprocess.run(
    cmd, cwd=cwd, env=env, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  if proc.returncode != 0:
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    raise AssertionError(f"{' '.join(map(str, cmd))}\nfailed with {how}; last output:\n{proc.stdout[-tail_chars:]}")
  return proc.stdout


def run_processes(args: list[str], count: int, *, cwd, env: dict, timeout: float) -> str:
  """Runs `args` (`python -m helpsteer_jax.MODULE FLAGS...`) as `count` jax.distributed processes
  through launch/local.sh --processes=count (of the checkout `cwd`), the local rehearsal a user runs (coordinator on
  127.0.0.1); returns their combined output, each line prefixed with its process index, or fails
  the test with its end."""
  python, flag, module, *flags = args
  assert flag == "-m" and module.startswith("helpsteer_jax."), args
  launcher = os.path.join(cwd, "launch", "local.sh")
  out = run_entry(
    ["bash", launcher, f"--processes={count}", module[len("helpsteer_jax.") :], *flags],
    cwd=cwd,
    env=dict(env, PYTHON=python),
    timeout=timeout,
    tail_chars=12000,
  )
  assert f"[{count - 1}] " in out, "the launcher did not start every process"
  return out
