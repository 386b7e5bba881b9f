"""A user's own data, in the layouts the README documents: TRL-style preference files (standard,
conversational, implicit prompt) train a reward model through the entry point; chat JSONL builds
SFT batches; prompt-only files feed RLOO; malformed rows are named by file and line."""

import json
import pathlib
import sys

import pytest

from helpsteer_jax.data.examples import BuildStats, DataError, RowError
from helpsteer_jax.data.preference_pairs import PreferencePairsBuilder
from helpsteer_jax.data.rl_prompts import load_rl_prompts
from helpsteer_jax.data.sources import SourceSpec
from helpsteer_jax.testing.subprocesses import run_entry

REPO = pathlib.Path(__file__).resolve().parents[2]

STANDARD = {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "5.", "margin": 2}
CONVERSATIONAL = {
  "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
  "chosen": [{"role": "assistant", "content": "Paris."}],
  "rejected": [{"role": "assistant", "content": "Lyon."}],
}
IMPLICIT = {
  "chosen": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
  "rejected": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "No."}],
}


def _write_jsonl(path: pathlib.Path, rows) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_trl_preference_rows_become_pairs():
  build = PreferencePairsBuilder()
  (standard,) = build(STANDARD, "f:1", BuildStats())
  assert standard.chosen == ({"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."})
  assert standard.rejected[-1] == {"role": "assistant", "content": "5."} and standard.label_magnitude == 2.0
  (conv,) = build(CONVERSATIONAL, "f:2", BuildStats())
  assert conv.chosen[:2] == tuple(CONVERSATIONAL["prompt"]) and conv.label_magnitude == 1.0
  (implicit,) = build(IMPLICIT, "f:3", BuildStats())
  assert implicit.chosen == tuple(IMPLICIT["chosen"])
  stats = BuildStats()
  assert build({"prompt": "x", "chosen": "same", "rejected": "same"}, "f:4", stats) == []
  assert stats.counts["identical_pair"] == 1
  with pytest.raises(RowError, match="share every turn but the last"):
    build(
      {"chosen": IMPLICIT["chosen"], "rejected": CONVERSATIONAL["prompt"] + CONVERSATIONAL["rejected"]},
      "f:5",
      BuildStats(),
    )
  with pytest.raises(RowError, match="'margin' must be a finite number >= 0"):
    build(dict(STANDARD, margin=-1), "f:6", BuildStats())


def test_prompt_only_rl_files_and_their_errors(tmp_path):
  path = _write_jsonl(
    tmp_path / "prompts.jsonl",
    [
      {"prompt": "Write a haiku about rain."},
      {"messages": [{"role": "user", "content": "Improve: 'teh cat'"}], "original_response": "teh cat"},
    ],
  )
  prompts = load_rl_prompts(SourceSpec(path=str(path)), "rl_prompts")
  assert [p.messages[-1]["content"] for p in prompts] == ["Write a haiku about rain.", "Improve: 'teh cat'"]
  assert [p.original for p in prompts] == ["", "teh cat"]
  bad = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": 123}])
  with pytest.raises(DataError, match=r"bad.jsonl:2: field 'prompt' must be a non-empty string, got int"):
    load_rl_prompts(SourceSpec(path=str(bad)), "rl_prompts")
  with pytest.raises(ValueError, match="RLOO data set 'chat'"):
    load_rl_prompts(SourceSpec(path=str(path)), "chat")


@pytest.mark.entry
def test_a_reward_model_trains_on_a_trl_preference_file(tmp_path, embedded_gguf_path):
  data = _write_jsonl(tmp_path / "prefs.jsonl", [STANDARD, CONVERSATIONAL, IMPLICIT] * 2)
  workdir = tmp_path / "rm"
  env = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "PATH": "/usr/bin:/bin",
  }
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/select_rm.py:tiny",
    f"--workdir={workdir}",
    "--config.data.dataset=preference_pairs",
    f"--config.data.path={data}",
    "--config.data.seq_len=64",
    "--config.total_steps=3",
    "--config.progress=False",
    "--config.tensorboard=False",
  ]
  run_entry(cmd, cwd=REPO, env=env, timeout=600)
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train][-1] == 3 and all(r["loss"] > 0 for r in train)
