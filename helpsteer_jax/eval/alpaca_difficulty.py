"""AlpacaEval's published instruction-difficulty table: what makes an LC win rate comparable.

AlpacaEval 2's length-controlled GLM (`length_controlled_v1`) takes two things from a table that
AlpacaEval publishes on the Hugging Face hub (`df_gamed.csv` in the `tatsu-lab/alpaca_eval`
dataset repository), both estimated once from its whole leaderboard:
  * the difficulty of each of the 805 instructions (`instruction_difficulty`, by `index`, the
    instruction's position in the evaluation set);
  * the annotations of two "gamed" versions of the baseline (told to be verbose, or concise),
    rows with `not_gamed_baseline` false, to which every model's GLM is regularised so that
    the length coefficient cannot be learned from one model alone.
A LC win rate computed without that table is a different statistic and cannot be set beside the
leaderboard's (or a paper's) numbers.

The table is read from a local file when one is given, and otherwise downloaded once through
`huggingface_hub`, which keeps it in its cache (so later runs, offline ones included, find it).
Columns used: `index`, `preference` (in [0, 1], the gamed output's probability of winning),
`std_delta_len`, `instruction_difficulty`, `not_gamed_baseline`; others (`model`) are ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from collections.abc import Mapping
from typing import Optional

import huggingface_hub
import numpy as np

from helpsteer_jax import storage

HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_FILE = "df_gamed.csv"
HUB_SOURCE = f"hf://datasets/{HUB_REPO}/{HUB_FILE}"
_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


@dataclasses.dataclass(frozen=True)
class DifficultyTable:
  difficulty: Mapping[str, float]  # instruction index ("0" ... "804") -> difficulty
  preference: np.ndarray  # [G] regularisation rows: P(the row's output beats the baseline); nan = none
  std_delta_len: np.ndarray  # [G] (baseline length - output length) / its standard deviation
  instruction_difficulty: np.ndarray  # [G]
  not_gamed: np.ndarray  # [G] bool: false for the gamed baselines' rows
  source: str  # the file it was read from, or HUB_SOURCE


def _float(text: str, where: str) -> float:
  text = text.strip()
  if text == "" or text.lower() == "nan":
    return math.nan
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"{where}: {text!r} is not a number") from None


def _bool(text: str, where: str) -> bool:
  value = text.strip().lower()
  if value in ("true", "1", "1.0"):
    return True
  if value in ("false", "0", "0.0"):
    return False
  raise ValueError(f"{where}: {text!r} is not a boolean")


def read_difficulty_table(path: str, source: str = "") -> DifficultyTable:
  """Reads a `df_gamed.csv`-layout file; errors name the file, row and column at fault."""
  if not storage.is_file(path):
    raise FileNotFoundError(f"{path}: difficulty table not found")
  # newline="": quoted fields keep their own line breaks, as csv expects.
  reader = csv.DictReader(io.StringIO(storage.read_text(path), newline=""))
  missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
  if missing:
    raise ValueError(f"{path}: the difficulty table lacks the column(s) {missing}")
  rows = list(reader)
  if not rows:
    raise ValueError(f"{path}: the difficulty table has no rows")
  difficulty: dict[str, float] = {}
  cols: dict[str, list] = {c: [] for c in _COLUMNS[1:]}
  for i, row in enumerate(rows, 2):
    where = f"{path}:{i}"
    index = str(int(_float(row["index"], f"{where} (index)")))
    gamma = _float(row["instruction_difficulty"], f"{where} (instruction_difficulty)")
    if math.isnan(gamma):
      raise ValueError(f"{where}: instruction_difficulty is missing")
    difficulty.setdefault(index, gamma)  # the first row of each instruction, as AlpacaEval reads it
    cols["preference"].append(_float(row["preference"], f"{where} (preference)"))
    cols["std_delta_len"].append(_float(row["std_delta_len"], f"{where} (std_delta_len)"))
    cols["instruction_difficulty"].append(gamma)
    cols["not_gamed_baseline"].append(_bool(row["not_gamed_baseline"], f"{where} (not_gamed_baseline)"))
  pref = np.asarray(cols["preference"])
  if np.any((pref < 0) | (pref > 1)):
    raise ValueError(f"{path}: preferences must lie in [0, 1]")
  return DifficultyTable(
    difficulty,
    pref,
    np.asarray(cols["std_delta_len"]),
    np.asarray(cols["instruction_difficulty"]),
    np.asarray(cols["not_gamed_baseline"], dtype=bool),
    source or path,
  )


def download_difficulty_table() -> str:
  """The local path of the hub's table (downloaded on first use, then from the cache)."""
  return huggingface_hub.hf_hub_download(repo_id=HUB_REPO, filename=HUB_FILE, repo_type="dataset")


def resolve_difficulty_table(path: str = "") -> tuple[Optional[DifficultyTable], str]:
  """(table, "") from `path`, or from the hub when `path` is ""; (None, why) when the hub's table
  cannot be had (offline with an empty cache), with one warning. A given `path` that cannot be
  read is an error: the user asked for that file."""
  if path:
    return read_difficulty_table(path), ""
  try:
    local = download_difficulty_table()
  except Exception as e:  # offline, no cache, hub unreachable: every failure means "no table"
    why = (
      f"AlpacaEval's instruction-difficulty table ({HUB_SOURCE}) could not be obtained "
      f"({type(e).__name__}: {e}); the length-controlled win rate is computed without its "
      "difficulty and regularisation terms and is NOT comparable to the AlpacaEval "
      "leaderboard. Set config.alpaca.difficulty_file to a local copy of df_gamed.csv."
    )
    logging.warning(why)
    return None, why
  return read_difficulty_table(local, HUB_SOURCE), ""
