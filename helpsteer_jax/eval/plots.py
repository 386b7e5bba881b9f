"""Scaling curves: benchmark score against token multiple, one figure per scaling axis.

For an axis (drafts, feedbacks or edits), the grid points of one series (search mode and role
models) that share the other two axes' values form one line, ordered by the axis value and
labelled with it, so each line shows what spending more tokens on that one axis buys. Budgeted
searches (scaling/token_budget.py) of one tree shape and margin form a dashed line of their own in
every figure, ordered by token multiple and labelled with their budgets, beside the fixed grid. The
references are single markers at their own token multiple: each policy's greedy answer at 1x, and
Best-of-N. Error bars are the results' 95% intervals. The x axis is the token multiple,
logarithmic (base 2), as token multiples double along the paper's grid.

Figures are drawn with matplotlib's object API on an Agg canvas: no display, and no pyplot global
state touched. Each is rendered in memory and written whole, so the output folder may be a bucket.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from helpsteer_jax import storage

AXES = ("drafts", "feedbacks", "edits")


def plot_scaling(points: Sequence[Mapping[str, Any]], axis: str, benchmark_name: str, path: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  if axis not in AXES:
    raise ValueError(f"axis={axis!r}; expected one of {AXES}")
  others = [a for a in AXES if a != axis]
  references = [p for p in points if p.get("kind", "grid") not in ("grid", "budget")]
  budgets = [p for p in points if p.get("kind") == "budget"]
  points = [p for p in points if p.get("kind", "grid") == "grid"]
  several_series = len({p.get("series", "") for p in points}) > 1
  lines: dict[tuple, list[Mapping[str, Any]]] = {}
  for p in points:
    lines.setdefault((p.get("series", ""),) + tuple(p[a] for a in others), []).append(p)
  fig = Figure(figsize=(6.0, 4.0), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for key, members in sorted(lines.items()):
    members = sorted(members, key=lambda p: p[axis])
    x = [p["token_multiple"] for p in members]
    y = [p["value"] for p in members]
    lo, hi = (list(e) for e in zip(*map(_error, members)))
    label = ", ".join(f"{a}={v}" for a, v in zip(others, key[1:]))
    if several_series:
      label = f"{key[0]}: {label}"
    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
    for p in members:
      ax.annotate(
        str(p[axis]), (p["token_multiple"], p["value"]), textcoords="offset points", xytext=(4, 4), fontsize=7
      )
  _plot_budgets(ax, budgets, several_series)
  for p in references:
    below, above = _error(p)
    name = "greedy" if p["kind"] == "greedy" else f"Best-of-{p['drafts']}" if p.get("drafts") else "Best-of-N"
    ax.errorbar(
      [p["token_multiple"]],
      [p["value"]],
      yerr=[[below], [above]],
      marker="*" if p["kind"] == "greedy" else "s",
      markersize=9,
      linestyle="none",
      capsize=3,
      label=f"{name} ({p.get('series', '')})",
    )
  everything = points + references + budgets
  if everything and min(p["token_multiple"] for p in everything) > 0:
    ax.set_xscale("log", base=2)
  ax.set_xlabel("token multiple (tokens counted / one greedy answer's, search.token_account)")
  ax.set_ylabel(benchmark_name)
  ax.set_title(f"{benchmark_name}: scaling the number of {axis}")
  ax.grid(True, alpha=0.3)
  if lines or references or budgets:  # beside the axes, so it never hides a point
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  # The format follows the file name, as savefig(path) does; a bucket object is written whole.
  image = io.BytesIO()
  fig.savefig(image, format=os.path.splitext(path)[1][1:].lower() or "png", bbox_inches="tight")
  storage.write_atomic(path, image.getvalue())


def budget_lines(
  budgets: Sequence[Mapping[str, Any]], several_series: bool
) -> list[tuple[str, list[Mapping[str, Any]]]]:
  """The budgeted points as lines: one per (series, tree shape, margin), ordered by token
  multiple, with its legend label."""
  lines: dict[tuple, list[Mapping[str, Any]]] = {}
  for p in budgets:
    key = (p.get("series", ""),) + tuple(p[a] for a in AXES) + (p.get("settle_margin") or 0.0,)
    lines.setdefault(key, []).append(p)
  out = []
  for key, members in sorted(lines.items()):
    label = "budget: " + " x ".join(f"{a}={v}" for a, v in zip(AXES, key[1:4]))
    if key[4]:
      label += f", margin {key[4]:g}"
    if several_series:
      label = f"{key[0]}: {label}"
    out.append((label, sorted(members, key=lambda p: p["token_multiple"])))
  return out


def _plot_budgets(ax, budgets: Sequence[Mapping[str, Any]], several_series: bool) -> None:
  for label, members in budget_lines(budgets, several_series):
    lo, hi = (list(e) for e in zip(*map(_error, members)))
    x = [p["token_multiple"] for p in members]
    y = [p["value"] for p in members]
    ax.errorbar(x, y, yerr=[lo, hi], marker="D", linestyle="--", capsize=3, label=label)
    for p in members:
      budget = p.get("token_budget") or 0.0
      ax.annotate(
        f"{budget:g}x" if budget else "no cap",
        (p["token_multiple"], p["value"]),
        textcoords="offset points",
        xytext=(4, -10),
        fontsize=7,
      )


def _error(p: Mapping[str, Any]) -> tuple[float, float]:
  """A point's error bar below and above its value (none where its interval is unknown)."""
  lo = p["value"] - p["ci_low"] if p.get("ci_low") is not None else 0.0
  hi = p["ci_high"] - p["value"] if p.get("ci_high") is not None else 0.0
  return lo, hi
