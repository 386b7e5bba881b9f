"""The real HelpSteer rows of the bundled data (those printed in the HelpSteer data cards)."""

import json
import pathlib

HELPSTEER = "helpsteer"


def helpsteer_file(bundled_data: pathlib.Path, name: str) -> pathlib.Path:
  """`helpsteer/<name>.jsonl` of the bundled data (the rows printed in the HelpSteer data cards)."""
  path = bundled_data / HELPSTEER / f"{name}.jsonl"
  assert path.is_file(), f"{path} is missing from the bundled data"
  return path


def helpsteer_rows(bundled_data: pathlib.Path, name: str) -> list[dict]:
  with open(helpsteer_file(bundled_data, name), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
