"""The search's settings: its mode, tree shape, feedback rule, per-stage sampling and schedule."""

from __future__ import annotations

import dataclasses
from typing import Optional

from helpsteer_jax.scaling.feedback_filters import get_rule

MODES = ("greedy", "best_of_n", "feedback_edit", "edit_without_feedback")
# auto: the memory plan's choice for the devices at hand (scaling/memory_plan.py), pipelined where
# their memory is not known (CPU).
SCHEDULES = ("pipelined", "staged", "auto")
# The paper samples 10-64 feedbacks per draft to keep its effective ones; by default twice the
# number kept, and never more than this.
MAX_FEEDBACK_SAMPLES = 64


def default_feedback_samples(num_feedbacks: int) -> int:
  """Feedbacks sampled per draft to keep `num_feedbacks` effective ones: 2M, at most 64, at
  least M."""
  return max(num_feedbacks, min(2 * num_feedbacks, MAX_FEEDBACK_SAMPLES))


@dataclasses.dataclass(frozen=True)
class StageSampling:
  temperature: float = 0.7
  top_p: Optional[float] = 0.95
  top_k: Optional[int] = None
  max_new_tokens: int = 256


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  mode: str = "feedback_edit"
  num_drafts: int = 2  # N
  num_feedbacks: int = 2  # M, effective feedbacks kept per draft after the rule
  num_feedback_samples: int = 0  # F, sampled per draft; 0 = default_feedback_samples(M)
  feedback_group_size: int = 3  # feedbacks shown together to one edit
  num_edits: int = 1  # K, per feedback group
  feedback_rule: str = "constructive"
  draft: StageSampling = StageSampling()
  feedback: StageSampling = StageSampling()
  edit: StageSampling = StageSampling()
  select_drafts: bool = True  # drafts compete with edits in the final choice
  measure_greedy: bool = True  # one greedy answer per prompt: the token-multiple denominator
  batch_size: int = 16
  seed: int = 0
  # pipelined: every role loaded, the stages of all prompts in flight overlapping; staged: one
  # stage at a time over all prompts, only its model loaded (scaling/staged.py).
  schedule: str = "pipelined"
  # Of each device's memory, the share the weights and the engines' caches may take: an engine
  # takes as many slots (at most batch_size) as fit at its longest request. 0 = batch_size slots,
  # caches grown on demand (also where the device reports no memory limit, as on CPU).
  memory_fraction: float = 0.9

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"search mode {self.mode!r}; expected one of {MODES}")
    if not 0.0 <= self.memory_fraction <= 1.0:
      raise ValueError(f"memory_fraction={self.memory_fraction}; expected 0 (off) to 1")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"search schedule {self.schedule!r}; expected one of {SCHEDULES}")
    for name in ("num_drafts", "num_feedbacks", "feedback_group_size", "num_edits", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)}; expected at least 1")
    if self.num_feedback_samples and self.num_feedback_samples < self.num_feedbacks:
      raise ValueError(
          f"num_feedback_samples={self.num_feedback_samples} < num_feedbacks={self.num_feedbacks}: "
          "cannot keep more effective feedbacks than are sampled (0 = the default, "
          f"{default_feedback_samples(self.num_feedbacks)})")
    if self.num_feedback_samples < 0:
      raise ValueError(f"num_feedback_samples={self.num_feedback_samples}; expected 0 (default) or more")
    get_rule(self.feedback_rule)  # fails early on an unknown rule name

  @property
  def feedback_samples(self) -> int:
    """F: feedbacks sampled per draft."""
    return self.num_feedback_samples or default_feedback_samples(self.num_feedbacks)


def settings_from_config(cfg) -> SearchSettings:
  """The settings of a config's `search` block."""
  s = cfg.to_dict()
  stages = {name: StageSampling(**s.pop(name)) for name in ("draft", "feedback", "edit")}
  return SearchSettings(**s, **stages)
