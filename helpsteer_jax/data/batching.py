"""Tokenised examples -> fixed-shape numpy batches (static shapes, so the train step compiles once).

SFT, packed (`PackedBatcher`): several examples share a row of length T; `segment_ids` (1, 2, ...
per example, 0 = padding) keep attention inside each example and `positions` restart at 0, so a
packed example gets the same logits as alone. SFT, padded (`PaddedBatcher`): one example per row,
the same keys. Both give

  input_ids     [B, T] int32    tokens (pad id on padding)
  targets       [B, T] int32    the next token of the same example (pad id where there is none)
  loss_weights  [B, T] float32  1 where `targets` is an assistant token to learn; 0 at the last
                                token of each example, on padding and where the target is context
  segment_ids   [B, T] int32    1.. per example in the row, 0 on padding
  positions     [B, T] int32    0.. within each example, 0 on padding

Reward pairs (`PairBatcher`), right-padded:
  chosen_input_ids, rejected_input_ids    [B, T] int32
  chosen_input_mask, rejected_input_mask  [B, T] bool (True on real tokens)
  label_magnitude  [B] float32  |preference label| (1 for Edit RM pairs)
  pair_kind        [B] int32    index into `examples.PAIR_KINDS`
  example_mask     [B] float32  1 for a real pair, 0 for a padding row of a last partial batch

Attribute regression (`RegressionBatcher`), right-padded:
  input_ids [B, T] int32, input_mask [B, T] bool, targets [B, O] float32 (MISSING_LABEL = -100
  where absent), example_mask [B] float32.

A batcher fills a global batch one example at a time (`add` says whether the example fit), then
`build` writes the rows of one process's slice; the iterator drives it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from helpsteer_jax.data.chat_encoding import TokenizedChat, TokenizedPair, TokenizedRegression
from helpsteer_jax.data.examples import MISSING_LABEL


class Batcher(Protocol):
  """Fills one global batch of `rows` rows from examples offered in order."""

  rows: int
  seq_len: int

  def start(self) -> Any:
    """An empty plan for the next batch."""

  def add(self, plan: Any, example: Any) -> bool:
    """Places `example` in the plan; False when it does not fit (the batch is then complete)."""

  def is_full(self, plan: Any) -> bool:
    """Whether no further example can fit (saves tokenising one more)."""

  def is_empty(self, plan: Any) -> bool: ...

  def build(self, plan: Any, rows: slice) -> dict[str, np.ndarray]:
    """The arrays of the global rows `rows` of the planned batch."""


def _check_shape(rows: int, seq_len: int) -> None:
  if rows < 1 or seq_len < 2:
    raise ValueError(f"batch rows={rows}, seq_len={seq_len}; expected rows >= 1 and seq_len >= 2")


def _num_rows(rows: slice, total: int) -> int:
  return len(range(*rows.indices(total)))


def _sft_arrays(b: int, t: int, pad_id: int) -> dict[str, np.ndarray]:
  return {
    "input_ids": np.full((b, t), pad_id, np.int32),
    "targets": np.full((b, t), pad_id, np.int32),
    "loss_weights": np.zeros((b, t), np.float32),
    "segment_ids": np.zeros((b, t), np.int32),
    "positions": np.zeros((b, t), np.int32),
  }


def _write_segment(out: dict[str, np.ndarray], row: int, offset: int, segment: int, example: TokenizedChat) -> int:
  """Writes one example at `offset` of `row` as segment `segment`; returns the new offset."""
  n = len(example)
  end = offset + n
  ids = example.input_ids
  out["input_ids"][row, offset:end] = ids
  out["targets"][row, offset : end - 1] = ids[1:]
  # The token at t predicts t + 1, so the weight at t is the loss mask of token t + 1.
  out["loss_weights"][row, offset : end - 1] = example.loss_mask[1:]
  out["segment_ids"][row, offset:end] = segment
  out["positions"][row, offset:end] = np.arange(n, dtype=np.int32)
  return end


@dataclasses.dataclass
class _PackPlan:
  rows: list[list[TokenizedChat]]
  free: list[int]


@dataclasses.dataclass
class PackedBatcher:
  """First-fit packing: each example goes into the first row with room for it; the batch is
  complete at the first example no row has room for (it opens the next batch), so a batch always
  holds a contiguous run of the example order and resuming needs only a position."""

  rows: int
  seq_len: int
  pad_id: int

  def __post_init__(self):
    _check_shape(self.rows, self.seq_len)

  def start(self) -> _PackPlan:
    return _PackPlan([[] for _ in range(self.rows)], [self.seq_len] * self.rows)

  def add(self, plan: _PackPlan, example: TokenizedChat) -> bool:
    n = len(example)
    if n > self.seq_len:
      raise ValueError(f"{example.source}: {n} tokens do not fit a row of {self.seq_len}; set max_length <= seq_len")
    for r, free in enumerate(plan.free):
      if n <= free:
        plan.rows[r].append(example)
        plan.free[r] -= n
        return True
    return False

  def is_full(self, plan: _PackPlan) -> bool:
    return max(plan.free) < 2  # a useful example has at least two tokens

  def is_empty(self, plan: _PackPlan) -> bool:
    return not any(plan.rows)

  def build(self, plan: _PackPlan, rows: slice) -> dict[str, np.ndarray]:
    selected = plan.rows[rows]
    out = _sft_arrays(len(selected), self.seq_len, self.pad_id)
    for r, row in enumerate(selected):
      offset = 0
      for s, example in enumerate(row, 1):
        offset = _write_segment(out, r, offset, s, example)
    return out


_Item = TypeVar("_Item", TokenizedChat, TokenizedPair, TokenizedRegression)


@dataclasses.dataclass
class _RowBatcher(Generic[_Item]):
  """One example per row; the subclass for each example type writes the rows (`build`)."""

  rows: int
  seq_len: int
  pad_id: int

  def __post_init__(self):
    _check_shape(self.rows, self.seq_len)

  def start(self) -> list[_Item]:
    return []

  def add(self, plan: list[_Item], example: _Item) -> bool:
    if len(plan) >= self.rows:
      return False
    if len(example) > self.seq_len:
      raise ValueError(
        f"{example.source}: {len(example)} tokens do not fit a row of {self.seq_len}; set max_length <= seq_len"
      )
    plan.append(example)
    return True

  def is_full(self, plan: list[_Item]) -> bool:
    return len(plan) >= self.rows

  def is_empty(self, plan: list[_Item]) -> bool:
    return not plan


class PaddedBatcher(_RowBatcher[TokenizedChat]):
  """One SFT example per row, right-padded to `seq_len` (same keys as packing)."""

  def build(self, plan: list[TokenizedChat], rows: slice) -> dict[str, np.ndarray]:
    b = _num_rows(rows, self.rows)
    out = _sft_arrays(b, self.seq_len, self.pad_id)
    for r, example in enumerate(plan[rows]):
      _write_segment(out, r, 0, 1, example)
    return out


def _right_pad(sequences: list[np.ndarray], b: int, t: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.full((b, t), pad_id, np.int32)
  mask = np.zeros((b, t), bool)
  for r, seq in enumerate(sequences):
    ids[r, : len(seq)] = seq
    mask[r, : len(seq)] = True
  return ids, mask


class PairBatcher(_RowBatcher[TokenizedPair]):
  """Chosen and rejected sequences of each pair in the same row of two [B, T] arrays."""

  def build(self, plan: list[TokenizedPair], rows: slice) -> dict[str, np.ndarray]:
    b = _num_rows(rows, self.rows)
    pairs = plan[rows]
    chosen_ids, chosen_mask = _right_pad([p.chosen for p in pairs], b, self.seq_len, self.pad_id)
    rejected_ids, rejected_mask = _right_pad([p.rejected for p in pairs], b, self.seq_len, self.pad_id)
    magnitude = np.zeros(b, np.float32)
    kind = np.zeros(b, np.int32)
    example_mask = np.zeros(b, np.float32)
    for r, p in enumerate(pairs):
      magnitude[r], kind[r], example_mask[r] = p.label_magnitude, p.kind, 1.0
    return {
      "chosen_input_ids": chosen_ids,
      "chosen_input_mask": chosen_mask,
      "rejected_input_ids": rejected_ids,
      "rejected_input_mask": rejected_mask,
      "label_magnitude": magnitude,
      "pair_kind": kind,
      "example_mask": example_mask,
    }


@dataclasses.dataclass
class RegressionBatcher(_RowBatcher[TokenizedRegression]):
  """Right-padded inputs and [B, O] attribute targets (padding rows: all MISSING_LABEL)."""

  num_outputs: int = 1

  def build(self, plan: list[TokenizedRegression], rows: slice) -> dict[str, np.ndarray]:
    b = _num_rows(rows, self.rows)
    items = plan[rows]
    ids, mask = _right_pad([x.input_ids for x in items], b, self.seq_len, self.pad_id)
    targets = np.full((b, self.num_outputs), MISSING_LABEL, np.float32)
    example_mask = np.zeros(b, np.float32)
    for r, x in enumerate(items):
      if x.targets.shape != (self.num_outputs,):
        raise ValueError(f"{x.source}: {x.targets.shape[0]} targets; the batch has {self.num_outputs} outputs")
      targets[r] = x.targets
      example_mask[r] = 1.0
    return {"input_ids": ids, "input_mask": mask, "targets": targets, "example_mask": example_mask}


def attention_mask(segment_ids: np.ndarray) -> np.ndarray:
  """[B, T] segment ids -> [B, T, T] bool: query t sees key s iff s <= t and both are in the same
  (non-padding) example; the rule `models.llama.Llama` applies to `segment_ids`."""
  t = segment_ids.shape[1]
  causal = np.tril(np.ones((t, t), bool))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return causal[None] & same & (segment_ids[:, None, :] != 0)
