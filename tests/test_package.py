"""The package is the whole product: the data the tests, the demo and the default experiments read
ships inside it (HELPSTEER_DATA_DIR overrides), and it lists its public API."""

import pathlib

import pytest

import helpsteer_jax
from helpsteer_jax.data.prompt_sources import BUNDLED_DATA_DIR, load_prompts, locate
from helpsteer_jax.eval import sources


def test_bundled_files_are_package_data_and_load(monkeypatch):
  monkeypatch.delenv("HELPSTEER_DATA_DIR", raising=False)
  assert BUNDLED_DATA_DIR.is_relative_to(pathlib.Path(helpsteer_jax.__file__).parent)
  relative = "eval/arena-hard-v0.1/question.jsonl"
  assert locate(relative) == BUNDLED_DATA_DIR / relative
  assert len(load_prompts("arena_hard")) == 500 and len(load_prompts("mt_bench")) == 80
  assert len(sources.arena_hard_questions()) == 500
  readme = (BUNDLED_DATA_DIR / "README.md").read_text()
  for path in sorted(BUNDLED_DATA_DIR.rglob("*.json*")):
    assert path.relative_to(BUNDLED_DATA_DIR).parts[0] in ("helpsteer", "eval")
    assert path.name.split(".")[0].split("_")[0] in readme or path.parent.name in readme, path


def test_each_benchmark_is_a_prompt_source_with_the_ids_its_evaluator_expects(monkeypatch):
  monkeypatch.delenv("HELPSTEER_DATA_DIR", raising=False)
  pairs = {
    "arena_hard": sources.arena_hard_questions(),
    "mt_bench": sources.mt_bench_questions(),
    "alpaca_eval": sources.alpaca_eval_set()[0],
  }
  for source, questions in pairs.items():
    prompts = load_prompts(source)
    assert [p.id for p in prompts] == [q.id for q in questions], source
    # The search's prompt is the evaluator's first turn (MT-Bench's second turn follows it).
    assert [p.conversation[0]["content"] for p in prompts] == [q.turns[0] for q in questions], source
  assert len(pairs["alpaca_eval"]) == 805 and pairs["alpaca_eval"][0].id == "0"


def test_the_data_dir_override_comes_first(tmp_path, monkeypatch):
  relative = "eval/arena-hard-v0.1/question.jsonl"
  (tmp_path / "eval" / "arena-hard-v0.1").mkdir(parents=True)
  (tmp_path / relative).write_text('{"uid": "x", "prompt": "hi"}\n')
  monkeypatch.setenv("HELPSTEER_DATA_DIR", str(tmp_path))
  assert locate(relative) == tmp_path / relative
  assert [item.id for item in load_prompts("arena_hard")] == ["x"]


@pytest.mark.entry
def test_the_package_lists_its_public_api():
  import subprocess
  import sys

  names = set(dir(helpsteer_jax))
  assert {"load_pretrained", "save_pretrained", "generate", "load_reward_model", "make_mesh"} <= names
  assert set(helpsteer_jax.__all__) <= names
  for name in helpsteer_jax.__all__:
    assert name in helpsteer_jax.__doc__ and getattr(helpsteer_jax, name) is not None
  # Importing the package stays light: no jax until a name is used.
  code = "import sys, helpsteer_jax; dir(helpsteer_jax); print('jax' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
