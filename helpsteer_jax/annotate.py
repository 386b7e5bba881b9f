"""Labels a data set with a trained attribute model: the SteerLM loop's middle step.

    python -m helpsteer_jax.annotate --model=runs/attr/export --input=rows.jsonl --output=annotated.jsonl

Input rows are HelpSteer-style (`prompt` string with `<extra_id_1>` turn markers, `response`) or
chat rows (`messages`, the last one the assistant's response). Each output row is the input row
with one field per model output (`helpfulness`, `correctness`, ...: the prediction rounded and
clipped to 0-4; `--raw` keeps the float), so it feeds attribute-conditioned SFT as is:

    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:smollm2 --workdir=runs/acsft \\
        --config.data.path=annotated.jsonl

Rows are appended as they are scored, and a rerun skips the input rows already in the output: a
row is known by its `id` field, or else by a hash of its fields other than the model's labels
(so an output row, which is its input row plus the labels, names the row it came from). A row
half-written by a crash is cut off and scored again. The input may grow between runs (rows
appended); output rows that the input does not hold mean the output came from another input and
the rerun is refused. `<output>.run_identity` records what produced the output (the model's
fingerprint, `--raw`, the input's fingerprint): a rerun with another model or another `--raw` is
refused before the model loads, naming each differing field (`--resume=force` continues anyway).
One process writes an output at a time (`.<output name>.lock` beside it). The input and output
may be local files or bucket URLs (gs://bucket/annotated.jsonl).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags
from tqdm.auto import tqdm

from helpsteer_jax import entry_point
from helpsteer_jax.checkpoints.identity import model_identity
from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.helpsteer2 import parse_prompt
from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl_rows
from helpsteer_jax.data.run_folder import claim_run_folder
from helpsteer_jax.data.run_identity import (
  RESUME_MODES,
  FieldRules,
  RunIdentity,
  RunMismatch,
  check_rerun,
  check_resume_mode,
  write_identity,
)
from helpsteer_jax.storage.fingerprints import file_fingerprint, text_fingerprint

flags.DEFINE_string("model", None, "Attribute reward model folder (HF LlamaForSequenceClassification).")
flags.DEFINE_string("input", None, "JSONL rows to label.")
flags.DEFINE_string("output", None, "JSONL file to write (appended; a rerun resumes).")
flags.DEFINE_integer("batch_size", 16, "Rows scored per forward pass.")
flags.DEFINE_bool("raw", False, "Write the raw float predictions instead of rounded 0-4 labels.")
flags.DEFINE_enum(
  "resume",
  "check",
  RESUME_MODES,
  "check: refuse to add to an output made by another model, --raw or input; force: add to it anyway.",
)
FLAGS = flags.FLAGS

# `<output>.run_identity`: the record `run_identity.json` is for a folder, beside a file. Not named
# *.json, so a folder of data files given to training (data/sources.local_files) does not read it
# as rows.
IDENTITY_SUFFIX = ".run_identity"


def conversation_of(row: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str]:
  """(conversation ending on the user's turn, response) of a HelpSteer-style or chat row."""
  if "messages" in row:
    messages = row["messages"]
    if not messages or messages[-1].get("role") != "assistant":
      raise ValueError(f"{where}: 'messages' must end with the assistant's response")
    return list(messages[:-1]), messages[-1]["content"]
  if "prompt" in row and "response" in row:
    return parse_prompt(row["prompt"]), row["response"]
  raise ValueError(f"{where}: expected 'prompt' and 'response' fields, or 'messages'")


def label(value: float, raw: bool) -> float | int:
  return float(value) if raw else int(min(4, max(0, round(float(value)))))


# -- which input row an output row is ----------------------------------------------------------


def row_key(row: dict[str, Any], labels: Sequence[str]) -> str:
  """The row's `id`, or a hash of its canonical JSON without the label fields: an input row and
  the output row made from it (the same fields plus the labels, which replace any the input had)
  get the same key."""
  if "id" in row:
    return "id:" + json.dumps(row["id"], sort_keys=True, ensure_ascii=False)
  fields = {k: v for k, v in row.items() if k not in labels}
  return text_fingerprint(json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def row_keys(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[str]:
  """`row_key` of each row, the n-th repeat of a key suffixed `#n`, so identical rows each get an
  output row (the output is written in input order, so repeats match up in order)."""
  seen: collections.Counter[str] = collections.Counter()
  keys = []
  for row in rows:
    key = row_key(row, labels)
    keys.append(key if not seen[key] else f"{key}#{seen[key]}")
    seen[key] += 1
  return keys


def check_same_input(
  output_path: str, input_path: str, done: Sequence[str], wanted: Sequence[str], resume: str
) -> None:
  """Refuses to add to an output holding rows that `input_path` does not have: it was made from
  another input. An input that only gained rows holds every row already annotated."""
  wanted_set = set(wanted)
  foreign = [i for i, key in enumerate(done, 1) if key not in wanted_set]
  if not foreign:
    return
  rows = f"{len(foreign)} of its {len(done)} rows (first: row {foreign[0]}) are not in {input_path}"
  if resume == "force":
    logging.warning("--resume=force: adding to %s although %s", output_path, rows)
    return
  raise RunMismatch(
    f"{output_path} was annotated from another input: {rows} (an input may only gain "
    "rows between runs). Choose another --output, or pass --resume=force to add "
    "this input's rows to it anyway."
  )


# -- what produced the output --------------------------------------------------------------------


def identity_path(output_path: str) -> str:
  return output_path + IDENTITY_SUFFIX


# The paths are compared through the fingerprints (a moved model or input is the same one), and
# the input's fingerprint changes when it gains rows, which `check_same_input` tells apart from
# another input row by row.
RULES = FieldRules(extends=("inputs.input",), ignores=("model", "input", "output", "batch_size", "resume"))


def annotation_identity(
  model_path: str, input_path: str, output_path: str, batch_size: int, raw: bool, resume: str
) -> RunIdentity:
  """What this annotation is: its flags, the model's fingerprint, the input's (no weights read)."""
  config = {
    "model": model_path,
    "input": input_path,
    "output": output_path,
    "batch_size": batch_size,
    "raw": raw,
    "resume": resume,
  }
  return RunIdentity(
    "annotation", config, {"model": model_identity(model_path).to_record()}, {"input": file_fingerprint(input_path)}
  )


def check_output_identity(output_path: str, identity: RunIdentity, resume: str, has_work: bool) -> None:
  """`run_identity.check_rerun` for an output file, whose record is the file beside it."""
  check_rerun(
    output_path, identity, RULES, resume, has_work, record=identity_path(output_path), force_flag="--resume=force"
  )


def write_output_identity(output_path: str, identity: RunIdentity) -> None:
  write_identity(output_path, identity, record=identity_path(output_path))


# -- the run ---------------------------------------------------------------------------------------


def _lock_place(output_path: str) -> tuple[str, str]:
  """(folder, lock file name) of the output's lock: beside it, named after it."""
  folder, name = os.path.split(output_path.rstrip("/"))
  return folder or ".", f".{name}.lock"


def annotate(
  model_path: str, input_path: str, output_path: str, batch_size: int = 16, raw: bool = False, resume: str = "check"
) -> int:
  """Scores every input row not yet in `output_path`; returns how many rows were written."""
  check_resume_mode(resume)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be at least 1")
  folder, lock_name = _lock_place(output_path)
  # Held from before the output is opened (which cuts a torn last line) to the last append.
  with claim_run_folder(folder, what=f"annotation of {output_path}", lock_name=lock_name):
    return _annotate(model_path, input_path, output_path, batch_size, raw, resume)


def _annotate(model_path: str, input_path: str, output_path: str, batch_size: int, raw: bool, resume: str) -> int:
  from helpsteer_jax.checkpoints.reward import reward_labels

  rows = [(f"{input_path}:{line_no}", row) for line_no, row in read_jsonl_rows(input_path)]
  identity = annotation_identity(model_path, input_path, output_path, batch_size, raw, resume)
  names = reward_labels(model_path)  # the folder's config: no weights are read
  out = JsonlAppender(output_path)  # cuts off a row a crash left half-written: it is scored again
  done = row_keys(out.read(), names)
  check_output_identity(output_path, identity, resume, has_work=bool(done))
  keys = row_keys([row for _, row in rows], names)
  check_same_input(output_path, input_path, done, keys, resume)
  write_output_identity(output_path, identity)
  done_set = set(done)
  todo = [item for item, key in zip(rows, keys) if key not in done_set]
  logging.info("%d input rows, %d already in %s", len(rows), len(rows) - len(todo), output_path)
  if not todo:
    out.compact()
    return 0
  return _score(model_path, names, todo, out, batch_size, raw)


def _score(
  model_path: str,
  names: Sequence[str],
  todo: Sequence[tuple[str, dict[str, Any]]],
  out: JsonlAppender,
  batch_size: int,
  raw: bool,
) -> int:
  from helpsteer_jax.scoring.selectors import RewardModelSelector

  model, tokenizer = ModelPool().reward_model(model_path)
  scorer = RewardModelSelector(model, tokenizer, batch_size=batch_size, weights=[1.0] * model.num_outputs)
  written = 0
  with tqdm(total=len(todo), desc="annotate") as progress:
    for start in range(0, len(todo), batch_size):
      chunk = todo[start : start + batch_size]
      items = [conversation_of(row, where) for where, row in chunk]
      scores = scorer.score_all(items)
      out.append(
        [{**row, **{n: label(v, raw) for n, v in zip(names, values)}} for (_, row), values in zip(chunk, scores)]
      )  # one flushed append per batch
      written += len(chunk)
      progress.update(len(chunk))
  out.compact()  # every row written: in a bucket, the appended objects as one
  return written


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  count = annotate(FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.batch_size, FLAGS.raw, FLAGS.resume)
  print(f"labelled {count} rows -> {FLAGS.output}")


def run() -> None:
  flags.mark_flags_as_required(["model", "input", "output"])
  entry_point.run(main)


if __name__ == "__main__":
  run()
