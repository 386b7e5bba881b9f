"""The assistant turns of an answer row, in every layout the evaluation reads: FastChat's and
arena-hard-auto's model answers, chat messages, the scaling search's records, AlpacaEval outputs.
Used by the benchmark file loaders and the answer sets alike."""

from __future__ import annotations

from typing import Any


def answer_text_from_row(row: dict[str, Any]) -> list[str]:
  """The assistant turns of one answer row, whatever its layout ([] when none is found)."""
  if (
    isinstance(row.get("turns"), list)
    and all(isinstance(t, str) for t in row["turns"])
    and "question_id" in row
    and "choices" not in row
    and "category" not in row
  ):
    return list(row["turns"])
  if isinstance(row.get("messages"), list):
    out = []
    for message in row["messages"]:
      if isinstance(message, dict) and message.get("role") == "assistant":
        content = message.get("content")
        out.append(content.get("answer", "") if isinstance(content, dict) else str(content))
    return out
  choices = row.get("choices")
  if isinstance(choices, list) and choices and isinstance(choices[0], dict):
    turns = choices[0].get("turns", [])
    return [t["content"] if isinstance(t, dict) else str(t) for t in turns]
  if isinstance(row.get("best"), dict) and isinstance(row["best"].get("text"), str):
    return [row["best"]["text"]]
  if isinstance(row.get("output"), str):
    return [row["output"]]
  return []
