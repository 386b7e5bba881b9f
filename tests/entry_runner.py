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


def _free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(command, count: int, *, cwd, env: dict, timeout: float) -> list[str]:
  """Runs `command(extra_args)` as `count` jax.distributed processes with an explicit coordinator
  on 127.0.0.1; returns their outputs, or fails the test with the end of a failed one's."""
  port = _free_port()
  procs = [subprocess.Popen(
      command(["--config.distributed.mode=explicit", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
               f"--config.distributed.num_processes={count}", f"--config.distributed.process_id={index}"]),
      cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for index in range(count)]
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  for index, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {index} failed with {p.returncode}:\n{out[-12000:]}"
  return outputs
