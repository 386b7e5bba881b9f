"""Where a running search is, stage by stage: samples and tokens written per stage and candidates
scored, for a progress line that moves as each sample completes (the stages of all prompts in
flight overlap, so one bar per prompt would sit still for most of a run)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Optional

STAGES = ("draft", "feedback", "edit", "greedy")


@dataclasses.dataclass
class StageCount:
  samples: int = 0
  tokens: int = 0


class StageProgress:
  """Counts per stage; `on_change(self)` is called at most every `min_interval_s` seconds."""

  def __init__(self, on_change: Optional[Callable[["StageProgress"], None]] = None, min_interval_s: float = 1.0):
    self.stages = {name: StageCount() for name in STAGES}
    self.scored = 0
    self.started = time.perf_counter()
    self._on_change = on_change
    self._min_interval_s = min_interval_s
    self._last_report = 0.0

  def add(self, stage: str, samples: int, tokens: int) -> None:
    count = self.stages[stage]
    count.samples += samples
    count.tokens += tokens
    self._changed()

  def add_scored(self, candidates: int) -> None:
    self.scored += candidates
    self._changed()

  def _changed(self) -> None:
    now = time.perf_counter()
    if self._on_change is not None and now - self._last_report >= self._min_interval_s:
      self._last_report = now
      self._on_change(self)

  def line(self) -> str:
    """`draft 12 (1.9k tok) | feedback 20 (2.4k tok) | edit 4 (0.6k tok) | greedy 3 | select 16`."""
    parts = []
    for name, count in self.stages.items():
      if count.samples:
        parts.append(f"{name} {count.samples} ({count.tokens / 1000:.1f}k tok)")
    if self.scored:
      parts.append(f"select {self.scored}")
    return " | ".join(parts) or "prefilling"


def stage_log_lines(engine_stats: dict[str, Any], select_seconds: float, scored: int) -> list[str]:
  """One line per stage with its tokens/s over its own span, from the engines' `stats()`."""
  lines = []
  for role, stats in engine_stats.items():
    for stage, s in stats.get("stages", {}).items():
      rate = f"{s['tokens_per_s']:.1f} tokens/s" if s.get("tokens_per_s") else "no decode time"
      lines.append(
        f"stage {stage} ({role}): {s['samples']} samples, {s['tokens']} tokens, {rate}, "
        f"{s.get('prefill_tokens', 0)} prompt tokens prefilled, "
        f"{s.get('reused_prompt_tokens', 0)} reused from kept chunks"
      )
    if stats.get("slot_use") is not None:
      lines.append(
        f"engine of {role}: slot use {stats['slot_use']:.1%} over {stats['decode_steps']} "
        f"decode steps of {stats['num_slots']} slots"
      )
  lines.append(f"stage select: {scored} candidates scored in {select_seconds:.1f} s")
  return lines
