"""One argument idiom for every experiment family (`config_args.parse_arg`), and the same `mesh`
block in training, scaling and evaluation configs."""

import importlib.util
import pathlib

import pytest

from helpsteer_jax.config_args import parse_arg

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(relative: str):
  spec = importlib.util.spec_from_file_location(relative.replace("/", "_"), EXPERIMENTS / relative)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_parse_arg():
  assert parse_arg(None, positional="size", size="tiny") == {"size": "tiny"}
  assert parse_arg("70b", positional="size", size="tiny") == {"size": "70b"}
  assert parse_arg("size=70b", positional="size", size="tiny") == {"size": "70b"}
  assert parse_arg("full,label=base", positional="variant", variant="tiny", label="") == {
    "variant": "full",
    "label": "base",
  }
  assert parse_arg("drafts=2, feedbacks=4", drafts="8", feedbacks="16") == {"drafts": "2", "feedbacks": "4"}
  with pytest.raises(ValueError, match=r"'draft=2': expected key=value with key in \['drafts'\]"):
    parse_arg("draft=2", drafts="8")
  with pytest.raises(ValueError, match="expected a variant value first"):
    parse_arg("x=1", positional="variant", variant="full")
  with pytest.raises(ValueError, match="expected key=value"):
    parse_arg("tiny", drafts="8")  # no positional key


def test_every_family_takes_the_same_argument_forms():
  assert _load("feedback_sft.py").get_config("size=70b").model.preset == "llama3_70b"
  assert _load("scaling/ablations.py").get_config("greedy,size=smollm2").search.mode == "greedy"
  assert _load("scaling/smollm2_self_feedback_edit.py").get_config("prompts=mt_bench").prompts.source == "mt_bench"
  assert _load("eval/arena_hard.py").get_config("tiny,label=x").label == "x"
  with pytest.raises(ValueError, match="key in"):
    _load("scaling/grid.py").get_config("draft=2")


@pytest.mark.parametrize(
  "relative,size",
  [
    ("feedback_sft.py", "tiny"),
    ("scaling/grid.py", "size=smollm2"),
    ("scaling/grid.py", "size=70b"),
    ("eval/arena_hard.py", "tiny"),
    ("eval/mt_bench.py", "full"),
  ],
)
def test_mesh_blocks_are_alike(relative, size):
  config = _load(relative).get_config(size)
  assert set(config.mesh.keys()) == {"shape", "rules"} and len(tuple(config.mesh.shape)) == 3
