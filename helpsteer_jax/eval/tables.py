"""The papers' tables, regenerated from result files: main, ablation, and the scaling points.

Rows are table labels (`label` in each `eval_result.json`: evaluate's `label=`, else the scaling
run's own `config.label`); columns are the benchmarks' headline numbers with their 95% intervals
and the run's token multiple:
    Arena-Hard score [CI] | MT-Bench average [CI] | AlpacaEval 2 LC win rate [CI] | token multiple
A benchmark a row was not evaluated on is left empty. A search run's label is
"<policy>:<variant>" (experiments/scaling/ablations.py); any other label is an external model
evaluated from its answer file ("gpt-4o", "claude-3.5-sonnet"). The default layout follows the
Feedback-Edit paper:
  main      for each policy, its greedy row and its "+ Feedback + Edit" row; then the external models
  ablation  one policy (the one with the most ablation variants): its greedy base row, the full
            system, then Best-of-N at equal tokens and each ablation
Grid points ("<policy>:grid:...", experiments/scaling/grid.py) and budgeted searches
("<policy>:budget:...") are points of the scaling plot, not rows. A rows file (JSON) can rename rows, reorder them, or assign result folders to rows when
their results carry no label:
    {"main": [{"label": "base", "name": "Llama-3.3-70B-Instruct", "dirs": ["outputs/eval/.../x"]}, ...],
     "ablation": [...]}
Results whose label is in no table are appended to the main table, so nothing is silently lost.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from helpsteer_jax import storage
from helpsteer_jax.data.text_files import read_text
from helpsteer_jax.eval.plots import plot_scaling
from helpsteer_jax.eval.results import find_results, row_key

# Display names of the policies of the experiments (scaling/config.py: POLICIES), in table order.
POLICY_NAMES = {
  "llama3.3_instruct": "Llama-3.3-70B-Instruct",
  "nemotron_instruct": "Llama-3.1-Nemotron-70B-Instruct",
  "smollm2": "SmolLM2-135M-Instruct",
}
# The main table's external rows the paper shows, by label, in order; other labels keep their own.
EXTERNAL_NAMES = {"gpt-4o": "GPT-4o", "claude-3.5-sonnet": "Claude-3.5-Sonnet"}
MAIN_VARIANTS = (("greedy", "{policy}"), ("feedback_edit", "{policy} + Feedback + Edit"))
ABLATION_VARIANTS = (
  ("greedy", "{policy} (base)"),
  ("feedback_edit", "Feedback + Edit (full system)"),
  ("best_of_n", "Best-of-N at equal tokens"),
  ("self_feedback_self_edit", "Self-feedback + self-edit"),
  ("feedback_self_edit", "Feedback + self-edit"),
  ("edit_without_rl", "Without RL (Edit model after SFT)"),
  ("edit_without_feedback", "Without feedback (edit only)"),
)
GRID = "grid"  # the variant part of a scaling grid point's label
BUDGET = "budget"  # ... and of a budgeted search's point (experiments/scaling/grid.py budget=X)
COLUMNS = (("arena_hard", "Arena-Hard"), ("mt_bench", "MT-Bench"), ("alpaca_eval", "AlpacaEval 2 LC"))
AXES = ("drafts", "feedbacks", "edits")


@dataclasses.dataclass(frozen=True)
class RowSpec:
  label: str
  name: str
  dirs: tuple[str, ...] = ()


def split_label(label: str) -> tuple[str, str]:
  """(policy, variant) of a search run's label, ("", label) of an external model's."""
  policy, _, variant = label.partition(":")
  return (policy, variant.split(":")[0]) if variant else ("", label)


def default_row_specs(labels: Iterable[str]) -> dict[str, list[RowSpec]]:
  """The paper's layout (module doc) for the labels at hand."""
  parsed = [split_label(label) for label in labels]
  known = {v for v, _ in MAIN_VARIANTS + ABLATION_VARIANTS}
  found = {p for p, v in parsed if p and v in known}
  policies = [p for p in POLICY_NAMES if p in found] + sorted(found - set(POLICY_NAMES))
  main = [
    RowSpec(f"{p}:{v}", name.format(policy=POLICY_NAMES.get(p, p))) for p in policies for v, name in MAIN_VARIANTS
  ]
  externals = {v for p, v in parsed if not p}
  main += [RowSpec(label, name) for label, name in EXTERNAL_NAMES.items() if label in externals]
  main += [RowSpec(label, label) for label in sorted(externals - set(EXTERNAL_NAMES))]
  ablation_only = {v for v, _ in ABLATION_VARIANTS} - {v for v, _ in MAIN_VARIANTS}
  counts = {p: sum(1 for q, v in set(parsed) if q == p and v in ablation_only) for p in policies}
  ablation = []
  if counts and max(counts.values()) > 0:
    chosen = max(policies, key=lambda p: counts[p])  # the first of the most, in table order
    ablation = [
      RowSpec(f"{chosen}:{v}", name.format(policy=POLICY_NAMES.get(chosen, chosen))) for v, name in ABLATION_VARIANTS
    ]
  return {"main": main, "ablation": ablation}


def read_row_specs(path: str = "", labels: Iterable[str] = ()) -> dict[str, list[RowSpec]]:
  """The tables' rows: the default layout for `labels`, or a rows JSON file (see module doc)."""
  if not path:
    return default_row_specs(labels)
  try:
    data = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  specs = {}
  for table in ("main", "ablation"):
    rows = []
    for i, row in enumerate(data.get(table, [])):
      if not isinstance(row, dict) or not isinstance(row.get("label"), str):
        raise ValueError(f"{path}: {table}[{i}] needs a string 'label'")
      label: str = row["label"]
      rows.append(RowSpec(label, row.get("name", label), tuple(row.get("dirs", ()))))
    specs[table] = rows
  return specs


def _folder(path: str) -> str:
  """One spelling per result folder: absolute on disk, without a trailing slash in a bucket."""
  absolute = storage.absolute(path)
  return absolute.rstrip("/") if storage.is_remote(absolute) else absolute


def assign_rows(
  results: Sequence[Mapping[str, Any]], specs: Mapping[str, Sequence[RowSpec]]
) -> dict[str, dict[str, Mapping[str, Any]]]:
  """label -> benchmark -> result (the newest when a label has several for one benchmark)."""
  by_dir = {_folder(d): spec.label for rows in specs.values() for spec in rows for d in spec.dirs}
  cells: dict[str, dict[str, Mapping[str, Any]]] = {}
  for result in results:
    label = by_dir.get(_folder(result["path"])) or row_key(result)
    slot = cells.setdefault(label, {})
    old = slot.get(result["benchmark"])
    if old is not None:
      logging.warning(
        "row %r has two %s results (%s, %s); the newer is used", label, result["benchmark"], old["path"], result["path"]
      )
      if old.get("created", "") > result.get("created", ""):
        continue
    slot[result["benchmark"]] = result
  return cells


def _row(label: str, name: str, cell: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  row: dict[str, Any] = {"label": label, "name": name}
  multiple = None
  for bench, _ in COLUMNS:
    result = cell.get(bench)
    h = result["headline"] if result else {}
    row[bench] = h.get("value")
    row[f"{bench}_ci_low"] = h.get("ci_low")
    row[f"{bench}_ci_high"] = h.get("ci_high")
    row[f"{bench}_note"] = h.get("note", "")  # e.g. an LC win rate not comparable to the leaderboard
    if result and result.get("scaling") and multiple is None:
      multiple = result["scaling"].get("token_multiple")
  row["token_multiple"] = multiple
  return row


def build_tables(
  results: Sequence[Mapping[str, Any]], specs: Mapping[str, Sequence[RowSpec]]
) -> dict[str, list[dict[str, Any]]]:
  """{"main": rows, "ablation": rows}; each row holds the three headline numbers and intervals."""
  cells = assign_rows(results, specs)
  tables: dict[str, list[dict[str, Any]]] = {}
  listed: set[str] = set()
  for table, rows in specs.items():
    tables[table] = [_row(s.label, s.name, cells[s.label]) for s in rows if s.label in cells]
    listed.update(s.label for s in rows)
  extra = [
    _row(label, label, cell)
    for label, cell in sorted(cells.items())
    if label not in listed and split_label(label)[1] not in (GRID, BUDGET)
  ]
  tables.setdefault("main", []).extend(extra)
  return tables


def _cell(value: Optional[float], lo: Optional[float], hi: Optional[float], digits: int) -> str:
  if value is None:
    return ""
  if lo is None or hi is None:
    return f"{value:.{digits}f}"
  return f"{value:.{digits}f} (-{value - lo:.{digits}f}, +{hi - value:.{digits}f})"


def table_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
  header = "| | " + " | ".join(f"{name} (95% CI)" for _, name in COLUMNS) + " | token multiple |"
  lines = [f"### {title}", "", header, "|---" * (len(COLUMNS) + 2) + "|"]
  for row in rows:
    cells = [
      _cell(row[b], row[f"{b}_ci_low"], row[f"{b}_ci_high"], 2 if b == "mt_bench" else 1)
      + (f" [{row[f'{b}_note'].split(':')[0]}]" if row.get(f"{b}_note") else "")
      for b, _ in COLUMNS
    ]
    multiple = "" if row["token_multiple"] is None else f"{row['token_multiple']:.1f}x"
    lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {multiple} |")
  return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
  fields = (
    ["label", "name"]
    + [f"{b}{s}" for b, _ in COLUMNS for s in ("", "_ci_low", "_ci_high", "_note")]
    + ["token_multiple"]
  )
  _write_csv_rows(fields, rows, path)


def _write_csv_rows(fields: Sequence[str], rows: Iterable[Mapping[str, Any]], path: str) -> None:
  """`rows` (None as empty cells) as the CSV file `path`, written whole: the text is built in
  memory first, since a bucket object cannot be written in pieces."""
  text = io.StringIO(newline="")  # csv writes its own \r\n line ends
  writer = csv.DictWriter(text, fieldnames=list(fields))
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
  storage.write_atomic(path, text.getvalue())


def _series(scaling: Mapping[str, Any]) -> str:
  """What makes runs comparable along a scaling axis: the search mode and the models in each role
  (an ablation that swaps a role is its own series, not a point on the main curve)."""
  roles = scaling.get("roles") or {}
  parts = [str(scaling.get("mode") or "")]
  parts += [f"{k}={os.path.basename(str(v).rstrip('/'))}" for k, v in sorted(roles.items()) if v]
  return " ".join(parts)


def _policy_series(scaling: Mapping[str, Any]) -> str:
  """A reference point's series: its policy model alone."""
  policy = (scaling.get("roles") or {}).get("policy") or ""
  return f"policy={os.path.basename(str(policy).rstrip('/'))}"


def scaling_points(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """The points of the scaling plots, from results with a known token multiple: `kind` grid (a
  search tree with all three axes), budget (such a tree under a token budget or settling margin:
  scaling/token_budget.py), or a reference at its own multiple, greedy (1x) and best_of_n. One
  point per (benchmark, kind, series, axes, budget); of several results for one the newest is kept."""
  points: dict[tuple, dict[str, Any]] = {}
  for r in sorted(results, key=lambda r: r.get("created", "")):
    s = r.get("scaling") or {}
    if s.get("token_multiple") is None:
      continue
    kind = s.get("mode") if s.get("mode") in ("greedy", "best_of_n") else "grid"
    if kind == "grid" and any(s.get(axis) is None for axis in AXES):
      continue
    if kind == "grid" and (s.get("token_budget") or s.get("settle_margin")):
      kind = "budget"
    h = r["headline"]
    point = {
      "benchmark": r["benchmark"],
      "kind": kind,
      "series": _series(s) if kind in ("grid", "budget") else _policy_series(s),
      "label": row_key(r),
      **{axis: None if s.get(axis) is None else int(s[axis]) for axis in AXES},
      "token_budget": float(s.get("token_budget") or 0.0),
      "settle_margin": float(s.get("settle_margin") or 0.0),
      "token_multiple": float(s["token_multiple"]),
      "value": h["value"],
      "ci_low": h.get("ci_low"),
      "ci_high": h.get("ci_high"),
      "path": r["path"],
    }
    keys = ("benchmark", "kind", "series") + AXES + ("token_budget", "settle_margin")
    points[tuple(point[k] for k in keys)] = point
  order = lambda p: (p["benchmark"], p["kind"], p["series"]) + tuple(p[a] or 0 for a in AXES) + (p["token_budget"],)
  return sorted(points.values(), key=order)


def write_all(results_dirs: Sequence[str], out_dir: str, rows_path: str = "", plots: bool = True) -> dict[str, Any]:
  """Reads every result under `results_dirs`; writes tables (Markdown + CSV) and scaling plots."""
  results = find_results(results_dirs)
  if not results:
    raise FileNotFoundError(f"no eval_result.json under {list(results_dirs)}")
  storage.makedirs(out_dir)
  tables = build_tables(results, read_row_specs(rows_path, {row_key(r) for r in results}))
  titles = {"main": "Main results", "ablation": "Ablations"}
  markdown = []
  written = []
  for name, rows in tables.items():
    if not rows:
      continue
    markdown.append(table_markdown(rows, titles.get(name, name)))
    write_csv(rows, storage.join(out_dir, f"{name}.csv"))
    written.append(storage.join(out_dir, f"{name}.csv"))
  points = scaling_points(results)
  if points:
    _write_csv_rows(list(points[0]), points, storage.join(out_dir, "scaling.csv"))
    written.append(storage.join(out_dir, "scaling.csv"))
    if plots:
      for bench in sorted({p["benchmark"] for p in points}):
        for axis in AXES:
          path = storage.join(out_dir, f"scaling_{bench}_{axis}.png")
          plot_scaling([p for p in points if p["benchmark"] == bench], axis, dict(COLUMNS)[bench], path)
          written.append(path)
  storage.write_atomic(storage.join(out_dir, "tables.md"), "\n\n".join(markdown) + "\n")
  written.append(storage.join(out_dir, "tables.md"))
  return {"tables": tables, "scaling_points": points, "files": written, "num_results": len(results)}
