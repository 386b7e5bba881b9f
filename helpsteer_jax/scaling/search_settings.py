"""The search's settings: its mode, tree shape, feedback rule, per-stage sampling and schedule."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from helpsteer_jax.sampling.settings import SamplingSettings
from helpsteer_jax.scaling.feedback_filters import get_rule

MODES = ("greedy", "best_of_n", "feedback_edit", "edit_without_feedback")
# auto: the memory plan's choice for the devices at hand (scaling/memory_plan.py), pipelined where
# their memory is not known (CPU).
SCHEDULES = ("pipelined", "staged", "auto")
# How the tree is read where the paper's text allows more than one reading (docs/reproducing.md,
# "The tree shape and the token account"): which drafts get feedback, which groups of a draft's
# kept feedback are edited, and which generated tokens count against one greedy answer.
EDITS_FROM = ("top_group", "every_group")
TOKEN_ACCOUNTS = ("responses", "generated")
# all: F feedbacks per draft at once; waves: `feedback_wave` at a time until M are kept or F drawn.
FEEDBACK_SAMPLING = ("all", "waves")
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
  # Feedback on the best `feedback_drafts` drafts by the selector (scored before any feedback is
  # sampled); 0 = on every draft.
  feedback_drafts: int = 0
  # top_group: one Edit request per draft, from its best kept group (the first
  # feedback_group_size feedbacks by the rule's rank); every_group: one per group of its kept feedback.
  edits_from: str = "top_group"
  # responses: the drafts' and edits' tokens over the greedy answer's (the answers a Best-of-N
  # could have sampled instead); generated: the feedback's tokens counted too.
  token_account: str = "responses"
  # waves: a draft's feedback is sampled `feedback_wave` (0 = M) at a time, the rule applied to
  # all drawn so far after each wave, until M are kept or F are drawn. Sample j is sample j of
  # `all`, so waves draw a prefix of the same samples (scaling/prompt_search.py).
  feedback_sampling: str = "all"
  feedback_wave: int = 0
  # A feedback whose first `early_exit_tokens` tokens already fail the rule (feedback_filters
  # EARLY_REJECTS: "The response is perfectly helpful") stops there and frees its slot; the kept
  # feedback is the same.
  feedback_early_exit: bool = False
  early_exit_tokens: int = 16
  # A token budget per prompt, a multiple of its greedy answer's tokens (counted by
  # token_account): every draft is written, then drafts are expanded (their feedback and edits)
  # one at a time, the best by the selector first, while the prompt's counted tokens stay under the
  # budget; an expansion started under it may end over it. 0: no budget (every draft expanded at
  # once, as the paper's grid). scaling/token_budget.py.
  token_budget: float = 0.0
  # Expanding drafts one at a time (with or without a budget), stop once the best candidate leads
  # the next draft to expand by at least this score: its edits would have to gain as much. 0: off.
  settle_margin: float = 0.0
  select_drafts: bool = True  # drafts compete with edits in the final choice
  measure_greedy: bool = True  # one greedy answer per prompt: the token-multiple denominator
  batch_size: int = 16
  # Entries of each local engine's prefix table: the prompts that share a conversation and a draft
  # (a draft's feedback samples, its edits) hold that prefix once and decode attention reads it
  # once per group of slots (sampling/engine_settings.py). The same tokens; 0: no table.
  prefix_entries: int = 0
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
    if self.prefix_entries < 0:
      raise ValueError(f"prefix_entries={self.prefix_entries}; expected 0 (no prefix table) or more")
    for name in ("num_drafts", "num_feedbacks", "feedback_group_size", "num_edits", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)}; expected at least 1")
    if self.num_feedback_samples and self.num_feedback_samples < self.num_feedbacks:
      raise ValueError(
        f"num_feedback_samples={self.num_feedback_samples} < num_feedbacks={self.num_feedbacks}: "
        "cannot keep more effective feedbacks than are sampled (0 = the default, "
        f"{default_feedback_samples(self.num_feedbacks)})"
      )
    if self.num_feedback_samples < 0:
      raise ValueError(f"num_feedback_samples={self.num_feedback_samples}; expected 0 (default) or more")
    if self.edits_from not in EDITS_FROM:
      raise ValueError(f"search.edits_from={self.edits_from!r}; expected one of {EDITS_FROM}")
    if self.token_account not in TOKEN_ACCOUNTS:
      raise ValueError(f"search.token_account={self.token_account!r}; expected one of {TOKEN_ACCOUNTS}")
    if self.feedback_sampling not in FEEDBACK_SAMPLING:
      raise ValueError(f"search.feedback_sampling={self.feedback_sampling!r}; expected one of {FEEDBACK_SAMPLING}")
    if self.feedback_wave < 0:
      raise ValueError(f"search.feedback_wave={self.feedback_wave}; expected 0 (= num_feedbacks) or more")
    if self.early_exit_tokens < 1:
      raise ValueError(f"search.early_exit_tokens={self.early_exit_tokens}; expected at least 1")
    if self.feedback_sampling == "waves" and self.schedule == "staged":
      raise ValueError("search.feedback_sampling='waves' runs under the pipelined schedule, not staged")
    if self.token_budget < 0 or self.settle_margin < 0:
      raise ValueError(
        f"search.token_budget={self.token_budget}, settle_margin={self.settle_margin}; expected 0 (off) or more"
      )
    if self.budgeted:
      if self.mode not in ("feedback_edit", "edit_without_feedback"):
        raise ValueError(f"search.token_budget and settle_margin expand drafts; mode {self.mode!r} has no expansions")
      if self.schedule == "staged":
        raise ValueError("search.token_budget and settle_margin run under the pipelined schedule, not staged")
      if self.token_budget and not self.measure_greedy:
        raise ValueError("search.token_budget is a multiple of the greedy answer: it needs measure_greedy=True")
    if self.feedback_drafts < 0:
      raise ValueError(f"search.feedback_drafts={self.feedback_drafts}; expected 0 (every draft) or more")
    get_rule(self.feedback_rule)  # fails early on an unknown rule name
    for name in ("draft", "feedback", "edit"):  # every stage, whether or not this mode runs it
      check_stage_sampling(name, getattr(self, name))

  @property
  def feedback_on_top_drafts(self) -> bool:
    """Whether only some drafts get feedback: the drafts are scored first."""
    return self.mode == "feedback_edit" and 0 < self.feedback_drafts < self.num_drafts

  @property
  def budgeted(self) -> bool:
    """Whether drafts are expanded one at a time, under a token budget or a settling margin."""
    return self.token_budget > 0 or self.settle_margin > 0

  @property
  def responses_per_prompt(self) -> int:
    """Answers the selector chooses among when every draft's feedback keeps M: the N of a
    Best-of-N that samples as many responses (equal generated tokens under the responses
    account, answers being of one length)."""
    if self.mode in ("greedy", "best_of_n"):
      return 1 if self.mode == "greedy" else self.num_drafts
    if self.mode == "edit_without_feedback":
      return self.num_drafts * (1 + self.num_edits)
    edited = self.feedback_drafts if self.feedback_on_top_drafts else self.num_drafts
    groups = 1 if self.edits_from == "top_group" else -(-self.num_feedbacks // self.feedback_group_size)
    return self.num_drafts + edited * groups * self.num_edits

  @property
  def wave_size(self) -> int:
    """Feedbacks per wave (feedback_sampling=waves)."""
    return min(self.feedback_wave or self.num_feedbacks, self.feedback_samples)

  @property
  def feedback_samples(self) -> int:
    """F: feedbacks sampled per draft."""
    return self.num_feedback_samples or default_feedback_samples(self.num_feedbacks)


def check_stage_sampling(name: str, stage: StageSampling) -> None:
  """The engine's checks of one stage's sampling values, failing with the stage named
  (`search.edit.top_p=1.5; expected in (0, 1] or None`) when the config is read."""
  try:
    SamplingSettings(
      max_new_tokens=stage.max_new_tokens, temperature=stage.temperature, top_k=stage.top_k, top_p=stage.top_p
    )
  except ValueError as e:
    raise ValueError(f"search.{name}.{e}") from None


def settings_from_config(cfg) -> SearchSettings:
  """The settings of a config's `search` block."""
  s = cfg.to_dict()
  # Any: the keywords go to SearchSettings beside the config's own, each to a StageSampling field.
  stages: dict[str, Any] = {name: StageSampling(**s.pop(name)) for name in ("draft", "feedback", "edit")}
  return SearchSettings(**s, **stages)
