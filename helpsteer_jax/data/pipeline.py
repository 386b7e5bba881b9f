"""From a data config to examples and to a resumable batch iterator: what the trainer calls.

    config = default_data_config()            # ml_collections ConfigDict
    config.dataset = "helpsteer3_edit"        # a key of DATASETS
    config.path = "my_data/helpsteer3_edit.jsonl"   # a local file or folder; empty: the hub
    it = make_iterator(config, tokenizer, process_index=jax.process_index(),
                       process_count=jax.process_count())
    batch = next(it); state = it.get_state()  # store `state` in the checkpoint; `set_state` resumes

A malformed row raises `DataError` naming its file and row (`on_error="raise"`) or is skipped and
counted (`on_error="skip"`); the counts (rows read, skipped by reason, examples built, ties and
length drops) are logged and kept in `stats`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, cast

from ml_collections import ConfigDict

from helpsteer_jax.data.batching import (
  Batcher,
  PackedBatcher,
  PaddedBatcher,
  PairBatcher,
  RegressionBatcher,
)
from helpsteer_jax.data.chat_encoding import ChatEncoder
from helpsteer_jax.data.chat_messages import ChatMessagesBuilder
from helpsteer_jax.data.examples import (
  BuildStats,
  ChatExample,
  DataError,
  Example,
  PairExample,
  RegressionExample,
  RowError,
)
from helpsteer_jax.data.helpsteer2 import (
  HELPSTEER2_ATTRIBUTES,
  STEERLM_ATTRIBUTES,
  AttributeConditionedSFTBuilder,
  AttributeRegressionBuilder,
  HelpSteer2PreferenceBuilder,
)
from helpsteer_jax.data.helpsteer3 import (
  EditBuilder,
  EditQualityBuilder,
  FeedbackBuilder,
  PreferenceBuilder,
)
from helpsteer_jax.data.iterator import DataIterator
from helpsteer_jax.data.preference_pairs import PreferencePairsBuilder
from helpsteer_jax.data.sources import SourceSpec, read_rows

log = logging.getLogger(__name__)

RowBuilder = Callable[[Mapping[str, Any], str, BuildStats], Sequence[Example]]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A named data set: where it lives on the hub and how its rows become examples."""

  hub_name: str
  subset: str
  data_dir: str
  make_builder: Callable[[ConfigDict, str], RowBuilder]  # (builder options, split) -> builder
  description: str
  hub_split: str = ""  # a fixed hub split (HelpSteer2-Preference serves everything as "train")


def _names(text: str) -> tuple[str, ...]:
  return tuple(a.strip() for a in text.split(",") if a.strip())


def _attributes(options: ConfigDict, default: tuple[str, ...]) -> tuple[str, ...]:
  return _names(options.attributes) or default


def _rl_prompts_only(options: ConfigDict, split: str) -> RowBuilder:
  raise ValueError("data set 'rl_prompts' holds RLOO prompts (trainer='rloo'), not training examples")


DATASETS: dict[str, DatasetInfo] = {
  "chat_messages": DatasetInfo(
    "",
    "",
    "",
    lambda o, split: ChatMessagesBuilder(all_assistant_turns=o.all_assistant_turns),
    "generic chat SFT rows {'messages': [...]} (e.g. the scaling search's distill.jsonl), or "
    "TRL prompt-completion rows {prompt, completion} (strings or messages)",
  ),
  "preference_pairs": DatasetInfo(
    "",
    "",
    "",
    lambda o, split: PreferencePairsBuilder(),
    "TRL-style preference rows {prompt, chosen, rejected} (strings or messages) -> pairs",
  ),
  "rl_prompts": DatasetInfo(
    "", "", "", _rl_prompts_only, "prompt-only rows {prompt} or {messages} (+ original_response) for RLOO"
  ),
  "helpsteer3_feedback": DatasetInfo(
    "nvidia/HelpSteer3",
    "feedback",
    "",
    lambda o, split: FeedbackBuilder(require_opening=o.require_feedback_opening, prompt_format=o.prompt_format),
    "Feedback-model SFT: (conversation, response) -> feedback",
  ),
  "helpsteer3_edit": DatasetInfo(
    "nvidia/HelpSteer3",
    "edit",
    "",
    lambda o, split: EditBuilder(max_permutations=o.max_permutations, prompt_format=o.prompt_format),
    "Edit-model SFT: (conversation, response, feedback) -> edit, every feedback order",
  ),
  "helpsteer3_edit_quality": DatasetInfo(
    "nvidia/HelpSteer3",
    "edit_quality",
    "",
    lambda o, split: EditQualityBuilder(
      o.include_bad_edit, o.include_no_edit, o.permute_feedback, prompt_format=o.prompt_format
    ),
    "Edit RM pairs: (bad edit, good edit) and (no edit, good edit)",
  ),
  "helpsteer3_preference": DatasetInfo(
    "nvidia/HelpSteer3",
    "preference",
    "",
    lambda o, split: PreferenceBuilder(min_magnitude=o.min_magnitude),
    "Bradley-Terry pairs from overall_preference (ties dropped)",
  ),
  "helpsteer2_preference": DatasetInfo(
    "nvidia/HelpSteer2",
    "",
    "preference",
    lambda o, split: HelpSteer2PreferenceBuilder(split=split, min_magnitude=o.min_magnitude),
    "Bradley-Terry pairs from HelpSteer2-Preference preference_strength (ties dropped)",
    hub_split="train",
  ),
  "helpsteer2_attributes": DatasetInfo(
    "nvidia/HelpSteer2",
    "",
    "",
    lambda o, split: AttributeRegressionBuilder(_attributes(o, HELPSTEER2_ATTRIBUTES), _names(o.labelled_attributes)),
    "attribute regression, HelpSteer2's 5 attributes",
  ),
  "helpsteer_attributes": DatasetInfo(
    "nvidia/HelpSteer",
    "",
    "",
    lambda o, split: AttributeRegressionBuilder(_attributes(o, STEERLM_ATTRIBUTES)),
    "attribute regression, the 9 SteerLM slots (HelpSteer fills 5; the rest are -100)",
  ),
  "helpsteer2_steerlm_sft": DatasetInfo(
    "nvidia/HelpSteer2",
    "",
    "",
    lambda o, split: AttributeConditionedSFTBuilder(_attributes(o, HELPSTEER2_ATTRIBUTES)),
    "attribute-conditioned SFT on HelpSteer2",
  ),
  "helpsteer_steerlm_sft": DatasetInfo(
    "nvidia/HelpSteer",
    "",
    "",
    lambda o, split: AttributeConditionedSFTBuilder(_attributes(o, HELPSTEER2_ATTRIBUTES)),
    "attribute-conditioned SFT on HelpSteer",
  ),
}


def default_data_config() -> ConfigDict:
  """Every data option, with defaults. Experiments override fields; `lock()` it so a misspelled
  override fails."""
  return ConfigDict(
    {
      "dataset": "helpsteer3_feedback",  # a key of DATASETS
      # Rows: a local file or folder (`path`), else the hub (empty fields = the data set's own).
      "path": "",
      "hub_name": "",
      "subset": "",
      "data_dir": "",
      "data_files": "",
      "split": "train",
      "on_error": "raise",  # raise | skip (skipped rows are counted and reported)
      # Tokens.
      "seq_len": 4096,  # T: the row length of every batch
      "max_length": 0,  # longest example kept; 0 = seq_len
      "truncation": "drop",  # drop | left (cut the prompt from the left, keep the output whole)
      "packing": True,  # SFT only: several examples per row; False = one per row
      # Order.
      "batch_size": 8,  # global rows (examples, for pairs and regression) per batch
      "shuffle": True,
      "seed": 0,
      "num_epochs": 0,  # 0 = repeat forever
      "drop_remainder": True,  # drop each epoch's last partial batch (False for evaluation)
      "lookahead": 256,  # examples tokenised per tokenizer call
      "builder": {
        # Feedback / Edit SFT, Edit RM: the role's prompt layout, as the search sends it
        # (formats/prompts.py: plain | nemotron; the Edit role has only plain).
        "prompt_format": "plain",
        "require_feedback_opening": True,  # feedback SFT: only "The response is X helpful ..."
        "max_permutations": 0,  # edit SFT: feedback orders per row, 0 = all (3 -> 6)
        "include_bad_edit": True,  # edit RM: (bad edit, good edit) pairs
        "include_no_edit": True,  # edit RM: (original, good edit) pairs
        "permute_feedback": False,  # edit RM: pairs for every feedback order
        "min_magnitude": 1,  # preference pairs: drop |label| below this (0 = tie is always dropped)
        "attributes": "",  # comma-separated output names; empty = the data set's own
        "labelled_attributes": "",  # regression: only these outputs keep labels (empty = all)
        "all_assistant_turns": True,  # chat_messages: loss on every assistant turn (else the last)
      },
    }
  )


def source_spec(config: ConfigDict) -> SourceSpec:
  info = dataset_info(config.dataset)
  if config.path:
    return SourceSpec(path=config.path)
  return SourceSpec(
    hub_name=config.hub_name or info.hub_name,
    subset=config.subset or info.subset,
    split=info.hub_split or config.split,
    data_dir=config.data_dir or info.data_dir,
    data_files=config.data_files,
  )


def dataset_info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  return DATASETS[name]


def build_examples(
  spec: SourceSpec, builder: RowBuilder, *, on_error: str = "raise", stats: Optional[BuildStats] = None
) -> tuple[list[Example], BuildStats]:
  """Reads every row of `spec` and builds its examples.

  A row the builder rejects raises `DataError("<file>:<line>: <what was expected>")`, or with
  `on_error="skip"` is counted under `skipped/malformed_row` and left out.
  """
  stats = stats if stats is not None else BuildStats()
  examples: list[Example] = []
  for row in read_rows(spec, on_error=on_error, stats=stats):
    stats.add("rows_read")
    try:
      built = builder(row.data, row.where, stats)
    except RowError as e:
      message = f"{row.where}: {e}"
      if on_error == "raise":
        raise DataError(message) from None
      stats.skip("malformed_row", message)
      continue
    stats.add("examples_built", len(built))
    examples.extend(built)
  return examples, stats


def load_examples(config: ConfigDict) -> tuple[list[Example], BuildStats]:
  """The examples of `config.dataset` from its configured source, and the counts."""
  info = dataset_info(config.dataset)
  spec = source_spec(config)
  builder = info.make_builder(config.builder, config.split)
  examples, stats = build_examples(spec, builder, on_error=config.on_error)
  if not examples:
    empty = " (the file is empty)" if not stats.counts.get("rows_read") else ""
    raise DataError(
      f"{spec.describe()}: no {config.dataset} examples were built from this "
      f"source{empty} ({stats.summary()}); expected rows in the data set's layout"
    )
  log.info("%s from %s: %d examples (%s)", config.dataset, spec.describe(), len(examples), stats.summary())
  return examples, stats


def make_batcher(examples: list[Example], config: ConfigDict, pad_id: int) -> Batcher:
  """The batcher for the examples' kind (all examples must be of one kind)."""
  kinds = {type(e) for e in examples}
  if len(kinds) != 1:
    raise DataError(f"examples of several kinds {sorted(k.__name__ for k in kinds)}; expected one")
  kind = kinds.pop()
  rows, seq_len = int(config.batch_size), int(config.seq_len)
  if kind is ChatExample:
    return (PackedBatcher if config.packing else PaddedBatcher)(rows, seq_len, pad_id)
  if kind is PairExample:
    return PairBatcher(rows, seq_len, pad_id)
  if kind is RegressionExample:
    # Every example is a RegressionExample (one kind, checked above).
    return RegressionBatcher(rows, seq_len, pad_id, num_outputs=len(cast(RegressionExample, examples[0]).targets))
  raise DataError(f"no batcher for {kind.__name__}")


def pad_token_id(tokenizer: Any) -> int:
  """The tokenizer's pad id, else its eos id, else 0 (padding is masked out either way)."""
  for name in ("pad_token_id", "eos_token_id"):
    value = getattr(tokenizer, name, None)
    if isinstance(value, int):
      return value
  return 0


def make_iterator(
  config: ConfigDict,
  tokenizer: Any,
  *,
  examples: Optional[list[Example]] = None,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
) -> DataIterator:
  """The batch iterator of `config` (examples loaded from its source unless given).

  `process_index`/`process_count` default to `jax.process_index()`/`jax.process_count()`.
  The iterator's `stats` holds the build counts merged with the length-rule counts as they occur.
  """
  build_stats = None
  if examples is None:
    examples, build_stats = load_examples(config)
  if process_index is None or process_count is None:
    import jax

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  max_length = int(config.max_length) or int(config.seq_len)
  if max_length > config.seq_len:
    raise ValueError(f"max_length={max_length} exceeds seq_len={config.seq_len}")
  encoder = ChatEncoder(tokenizer, max_length, config.truncation)
  if build_stats is not None:
    encoder.stats.merge(build_stats)
  batcher = make_batcher(examples, config, pad_token_id(tokenizer))
  return DataIterator(
    examples,
    encoder,
    batcher,
    seed=config.seed,
    shuffle=config.shuffle,
    num_epochs=int(config.num_epochs) or None,
    drop_remainder=config.drop_remainder,
    process_index=process_index,
    process_count=process_count,
    lookahead=config.lookahead,
  )
