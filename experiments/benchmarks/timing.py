"""Timing and reporting shared by the benchmark scripts in this folder."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
  """Seconds of the fastest of `repeats` calls (the least disturbed by other work)."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def write_report(path: str, lines: list[str]) -> None:
  """Writes the Markdown report and prints it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def cpu_name() -> str:
  """The CPU's model name ("AMD EPYC ...", from /proc/cpuinfo on Linux), else the architecture:
  tables from different days name the CPU they ran on, since only ratios within one run compare."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
