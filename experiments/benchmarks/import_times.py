"""What each slow library costs at start-up, and which imports inside the package's functions defer it.

    python experiments/benchmarks/import_times.py [--repeats=3]

Each library is imported alone in a fresh interpreter (`--repeats` times; the fastest counts) after
the standard library and numpy, which every entry point loads anyway: the modules of it that the
package imports (orbax.checkpoint, matplotlib.figure, ...), not its bare top module. Then each entry point's
`--help` is timed the same way, as a user meets it. The package keeps an import inside a function
only where it defers one of these libraries (helpsteer_jax/testing/import_audit.py; tests/
test_layers.py holds the rule); the report lists those imports by the library they defer.
"""

from __future__ import annotations

import argparse
import ast
import collections
import os
import pathlib
import subprocess
import sys

from timing import cpu_name, write_report

REPO = pathlib.Path(__file__).resolve().parents[2]
ENTRY_POINTS = ["scale", "train", "evaluate", "annotate", "convert", "tables", "plan", "serve"]
# Measured to show they are cheap: imported at the top of modules.
FAST_LIBRARIES = ("etils", "fsspec", "gguf", "tokenizers", "pyarrow", "huggingface_hub")


def _package_modules(root: str) -> list[str]:
  """The modules of library `root` that the package imports anywhere."""
  found = set()
  for path in (REPO / "helpsteer_jax").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        found.update(a.name for a in node.names if a.name.split(".")[0] == root)
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root and not node.level:
        found.add(node.module)
  return sorted(found) or [root]


def _seconds(code: str, repeats: int) -> float:
  """The fastest wall time of `code` in a fresh interpreter, measured inside it."""
  program = f"import time, numpy\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
  runs = []
  for _ in range(repeats):
    out = subprocess.run(
      [sys.executable, "-c", program],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    if out.returncode != 0:
      return float("nan")
    runs.append(float(out.stdout.strip().splitlines()[-1]))
  return min(runs)


def _help_seconds(entry: str, repeats: int) -> float:
  code = (
    f"import sys\nsys.argv = ['{entry}', '--help']\nimport runpy\ntry:\n"
    f"  runpy.run_module('helpsteer_jax.{entry}', run_name='__main__')\nexcept SystemExit:\n  pass"
  )
  return _seconds(code, repeats)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "import_times.md"))
  args = parser.parse_args()

  from helpsteer_jax.testing.import_audit import SLOW_LIBRARIES, function_level_imports

  rows = function_level_imports(REPO / "helpsteer_jax")
  by_library = collections.defaultdict(list)
  for row in rows:
    by_library[row.deferred[0] if row.deferred else "(none)"].append(row)
  libraries = sorted(SLOW_LIBRARIES) + list(FAST_LIBRARIES)
  library_s = {name: _seconds(f"import {', '.join(_package_modules(name))}", args.repeats) for name in libraries}
  help_s = {entry: _help_seconds(entry, args.repeats) for entry in ENTRY_POINTS}

  lines = [
    "# Start-up: the slow libraries and the imports that defer them",
    "",
    f"Machine: {cpu_name()}, {os.cpu_count()} cores; fastest of {args.repeats} fresh interpreters, "
    "each after the standard library and numpy.",
    "",
    "| library | import s | imports inside functions that defer it |",
    "|---|---:|---:|",
    *[f"| {name} | {s:.2f} | {len(by_library.get(name, []))} |" for name, s in library_s.items()],
    "",
    f"{len(rows)} imports sit inside functions; each defers at least one of the slow libraries (the first "
    f"{len(SLOW_LIBRARIES)} rows; a row counts under the first it defers). The last {len(FAST_LIBRARIES)} rows "
    "are imported at the top of modules, as is the rest of the package. Times are of the modules the package "
    "imports from each library (orbax.checkpoint, matplotlib.figure, etils.epath, ...).",
    "",
    "| entry point | `--help` s |",
    "|---|---:|",
    *[f"| `python -m helpsteer_jax.{entry} --help` | {s:.2f} |" for entry, s in help_s.items()],
  ]
  write_report(args.out, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
