"""Labels a data set with a trained attribute model: the SteerLM loop's middle step.

    python -m helpsteer_jax.annotate --model=runs/attr/export --input=rows.jsonl --output=annotated.jsonl

Input rows are HelpSteer-style (`prompt` string with `<extra_id_1>` turn markers, `response`) or
chat rows (`messages`, the last one the assistant's response). Each output row is the input row
with one field per model output (`helpfulness`, `correctness`, ...: the prediction rounded and
clipped to 0-4; `--raw` keeps the float), so it feeds attribute-conditioned SFT as is:

    python -m helpsteer_jax.train --config=experiments/steerlm_acsft.py:smollm2 --workdir=runs/acsft \\
        --config.data.path=annotated.jsonl

Rows are appended as they are scored; a rerun skips the rows already in the output. The input
and output may be local files or bucket URLs (gs://bucket/annotated.jsonl).
"""

from __future__ import annotations

from typing import Any

from absl import app, flags

from helpsteer_jax import entry_point

flags.DEFINE_string("model", None, "Attribute reward model folder (HF LlamaForSequenceClassification).")
flags.DEFINE_string("input", None, "JSONL rows to label.")
flags.DEFINE_string("output", None, "JSONL file to write (appended; a rerun resumes).")
flags.DEFINE_integer("batch_size", 16, "Rows scored per forward pass.")
flags.DEFINE_bool("raw", False, "Write the raw float predictions instead of rounded 0-4 labels.")
FLAGS = flags.FLAGS


def conversation_of(row: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str]:
  """(conversation ending on the user's turn, response) of a HelpSteer-style or chat row."""
  from helpsteer_jax.data.helpsteer2 import parse_prompt

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


def annotate(model_path: str, input_path: str, output_path: str, batch_size: int = 16, raw: bool = False) -> int:
  """Scores every row not yet in `output_path`; returns how many rows were written."""
  from tqdm.auto import tqdm

  from helpsteer_jax.checkpoints.model_pool import ModelPool
  from helpsteer_jax.checkpoints.reward import reward_labels
  from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl_rows
  from helpsteer_jax.scoring.selectors import RewardModelSelector

  rows = [(f"{input_path}:{line_no}", row) for line_no, row in read_jsonl_rows(input_path)]
  out = JsonlAppender(output_path)  # cuts off a row a crash left half-written: it is scored again
  todo = rows[len(out.read()):]
  if not todo:
    out.compact()
    return 0
  model, tokenizer = ModelPool().reward_model(model_path)
  names = reward_labels(model_path)
  scorer = RewardModelSelector(model, tokenizer, batch_size=batch_size, weights=[1.0] * model.num_outputs)
  written = 0
  with tqdm(total=len(todo), desc="annotate") as progress:
    for start in range(0, len(todo), batch_size):
      chunk = todo[start:start + batch_size]
      items = [conversation_of(row, where) for where, row in chunk]
      scores = scorer.score_all(items)
      out.append([{**row, **{n: label(v, raw) for n, v in zip(names, values)}}
                  for (_, row), values in zip(chunk, scores)])  # one flushed append per batch
      written += len(chunk)
      progress.update(len(chunk))
  out.compact()  # every row written: in a bucket, the appended objects as one
  return written


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  count = annotate(FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.batch_size, FLAGS.raw)
  print(f"labelled {count} rows -> {FLAGS.output}")


def run() -> None:
  flags.mark_flags_as_required(["model", "input", "output"])
  entry_point.run(main)


if __name__ == "__main__":
  run()
