"""The data the tests, the demo and the default experiments read ships inside the package, so a
clone (or an installed wheel) runs without any folder beside it; HELPSTEER_DATA_DIR overrides."""

import pathlib

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


def test_the_data_dir_override_comes_first(tmp_path, monkeypatch):
  relative = "eval/arena-hard-v0.1/question.jsonl"
  (tmp_path / "eval" / "arena-hard-v0.1").mkdir(parents=True)
  (tmp_path / relative).write_text('{"uid": "x", "prompt": "hi"}\n')
  monkeypatch.setenv("HELPSTEER_DATA_DIR", str(tmp_path))
  assert locate(relative) == tmp_path / relative
  assert [item.id for item in load_prompts("arena_hard")] == ["x"]
