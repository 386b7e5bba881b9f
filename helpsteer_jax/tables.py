"""The papers' tables and scaling plots from evaluation result files.

    python -m helpsteer_jax.tables --results=outputs/eval --out=outputs/tables
    python -m helpsteer_jax.tables --results=outputs/eval/arena_hard,outputs/eval/mt_bench \\
        --rows=experiments/eval/rows.json --out=outputs/tables

Writes `tables.md` (main and ablation tables with 95% intervals), `main.csv`, `ablation.csv`,
`scaling.csv` and `scaling_<benchmark>_<axis>.png` (score against token multiple per scaling
axis). `--results` and `--out` may be local folders or bucket URLs (gs://bucket/eval). The result-file format and the row layout are documented in `helpsteer_jax/eval/results.py`
and `helpsteer_jax/eval/tables.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import app, flags

from helpsteer_jax import entry_point, storage
from helpsteer_jax.eval.tables import write_all


def make_tables(results: Sequence[str], out_dir: str, rows: str = "", plots: bool = True) -> dict[str, Any]:
  return write_all(results, out_dir, rows, plots)


def run():
  results = flags.DEFINE_list("results", None, "Result folders (searched recursively), comma-separated.")
  out = flags.DEFINE_string("out", None, "Output folder for tables and plots.")
  rows = flags.DEFINE_string("rows", "", "Optional rows JSON (labels, names, folders per table).")
  plots = flags.DEFINE_bool("plots", True, "Draw the scaling plots.")

  def main(argv):
    del argv
    if not results.value or not out.value:
      raise app.UsageError("--results and --out are required")
    report = make_tables(results.value, out.value, rows.value, plots.value)
    print(storage.read_text(storage.join(out.value, "tables.md")))
    print(f"{report['num_results']} results; wrote {len(report['files'])} files to {out.value}")

  entry_point.run(main)


if __name__ == "__main__":
  run()
