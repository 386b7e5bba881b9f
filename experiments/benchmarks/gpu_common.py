"""What the GPU session's parts share: arguments, the device's peak and bandwidth, model shapes,
timing and the per-part report.

Every part runs as its own process (`gpu_session.sh`), at full size on a GPU or with `--tiny` on
any backend (the same code end to end, small shapes: the session's rehearsal on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import traceback
from collections.abc import Callable

from timing import best_time

# Dense bf16 peak FLOP/s by device kind (vendor datasheets, no sparsity). Unknown devices (a CPU
# in the rehearsal) get None: fractions of a peak are then left out.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12}


def parse_args(doc: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--tiny", action="store_true", help="small shapes: the rehearsal on any backend")
  parser.add_argument("--out", required=True, help="folder the part's Markdown table is written to")
  return parser.parse_args()


@dataclasses.dataclass(frozen=True)
class Device:
  kind: str  # "NVIDIA H200", or "cpu"
  platform: str  # gpu | tpu | cpu
  peak_bf16: float | None  # FLOP/s

  @property
  def describe(self) -> str:
    import jax

    return f"{self.kind} ({self.platform}, jax {jax.__version__})"


def device() -> Device:
  import jax

  first = jax.devices()[0]
  kind = getattr(first, "device_kind", str(first))
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
  return Device(kind=kind, platform=first.platform, peak_bf16=peak)


def copy_bandwidth(num_bytes: int) -> float:
  """Bytes/s of an on-device array copy (read + write counted), best of 5."""
  import jax
  import jax.numpy as jnp

  x = jnp.ones((num_bytes // 2,), jnp.bfloat16)
  copy = jax.jit(lambda a: a + jnp.asarray(1, a.dtype))
  jax.block_until_ready(copy(x))
  return 2 * num_bytes / best_time(lambda: jax.block_until_ready(copy(x)), 5)


def seconds_of(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def llama8b_shape(tiny: bool, **overrides):
  """Llama-3-8B widths in bf16 (`tiny`: the tiny preset in bf16), with `overrides`."""
  from helpsteer_jax.models.config import get_preset

  bf16 = dict(dtype="bfloat16", param_dtype="bfloat16")
  return get_preset("tiny" if tiny else "llama3_8b", **bf16, **overrides)


class Report:
  """One part's Markdown file, rewritten after every row so that a part stopped by its timeout
  keeps what it measured."""

  def __init__(self, out_dir: str, name: str, title: str):
    os.makedirs(out_dir, exist_ok=True)
    self.path = os.path.join(out_dir, f"{name}.md")
    self.lines = [f"## {title}", ""]
    self.flush()

  def add(self, *lines: str) -> None:
    self.lines.extend(lines)
    for line in lines:
      print(line, flush=True)
    self.flush()

  def guarded(self, label: str, fn: Callable[[], None]) -> bool:
    """Runs one row's measurement; a failure becomes a row naming the error (its traceback goes
    to the log) and the part goes on with its next row."""
    try:
      fn()
      return True
    except Exception as e:  # noqa: BLE001 - any failure of one case is reported, not fatal
      traceback.print_exc()
      message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
      self.add(f"| {label} | failed: {message} |")
      return False

  def flush(self) -> None:
    with open(self.path, "w") as f:
      f.write("\n".join(self.lines) + "\n")
