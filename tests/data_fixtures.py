"""Shared helpers of the data tests: the real HelpSteer fixture rows and the real SmolLM2 tokenizer."""

import json
import pathlib

import pytest

from scaling_fixtures import smollm2_tokenizer

HELPSTEER = "helpsteer"


def helpsteer_file(bundled_data: pathlib.Path, name: str) -> pathlib.Path:
  """`helpsteer/<name>.jsonl` of the bundled data (the rows printed in the HelpSteer data cards)."""
  path = bundled_data / HELPSTEER / f"{name}.jsonl"
  assert path.is_file(), f"{path} is missing from the bundled data"
  return path


def helpsteer_rows(bundled_data: pathlib.Path, name: str) -> list[dict]:
  with open(helpsteer_file(bundled_data, name), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def smol_tokenizer(embedded_gguf_path):
  """SmolLM2-135M-Instruct's tokenizer rebuilt from the embedded GGUF (ChatML template)."""
  return smollm2_tokenizer()
