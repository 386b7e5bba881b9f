"""Prompt shards run apart and merged equal one unsharded run, field for field; the merge refuses
what would mix runs (another config, a prompt in two folders, an output it did not write)."""

import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax import scale
from helpsteer_jax.scaling.merge import MergeError, merge_runs
from helpsteer_jax.scaling.shards import PromptShard, parse_shard, shard_of_folder
from helpsteer_jax.testing.search_runs import search_config, write_prompts

# Runs searches or compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello.", "Count to three.", "Name a fruit."]


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory):
  """(prompt file, the unsharded run's folder, the parent folder of its two shards)."""
  tmp = tmp_path_factory.mktemp("shards")
  prompts = tmp / "prompts.jsonl"
  write_prompts(prompts, PROMPTS)
  whole = tmp / "whole"
  scale.run_search(search_config(model_dir, prompts, whole))
  sharded = tmp / "sharded"
  for index in range(2):
    config = search_config(model_dir, prompts, sharded)
    config.prompts.shard = f"{index}/2"
    scale.run_search(config)
  return prompts, whole, sharded


def _records(folder):
  with open(os.path.join(folder, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_shard_selection_and_names():
  assert parse_shard("") is None and parse_shard("1/3") == PromptShard(1, 3)
  assert PromptShard(1, 3).select(list(range(8))) == [1, 4, 7]
  assert shard_of_folder("out/shard-2-of-5/") == PromptShard(2, 5) and shard_of_folder("out/x") is None
  for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
    with pytest.raises(ValueError, match="prompts.shard"):
      parse_shard(bad)


@pytest.mark.entry
def test_merged_shards_equal_one_run(runs, tmp_path):
  _, whole, sharded = runs
  # Each shard took every second prompt into its own folder.
  assert [r["id"] for r in _records(sharded / "shard-0-of-2")] == ["q0", "q2", "q4"]
  assert [r["id"] for r in _records(sharded / "shard-1-of-2")] == ["q1", "q3"]
  merged = tmp_path / "merged"
  summary = merge_runs([str(sharded)], str(merged))
  assert _records(merged) == _records(whole)
  with open(whole / "summary.json") as f:
    reference = json.load(f)
  for key in (
    "num_prompts",
    "token_multiple",
    "mean_token_multiple_per_prompt",
    "mean_best_score",
    "best_is_an_edit",
    "feedback_kept_fraction",
    "mean_candidates",
    "tokens",
  ):
    assert summary[key] == reference[key], key
  assert summary["missing_shards"] == [] and summary["prompts_in_run"] == len(PROMPTS)
  # `evaluate` reads the merged folder as it reads a run's: the same grid point and token multiple.
  from helpsteer_jax.eval.answers import scaling_info

  info, want = scaling_info(str(merged)), scaling_info(str(whole))
  assert {k: v for k, v in info.items() if k != "run_dir"} == {k: v for k, v in want.items() if k != "run_dir"}
  with open(merged / "distill.jsonl") as f, open(whole / "distill.jsonl") as g:
    assert f.read() == g.read()
  # Named one by one, through the entry point, into an output an earlier merge wrote.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "helpsteer_jax.merge",
      f"--inputs={sharded}/shard-1-of-2,{sharded}/shard-0-of-2",
      f"--output={merged}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "2 run folders, 5 of 5 prompts" in proc.stdout
  assert _records(merged) == _records(whole)


def test_merge_refusals(runs, model_dir, tmp_path):
  prompts, whole, sharded = runs
  shard0 = str(sharded / "shard-0-of-2")
  with pytest.raises(MergeError, match="prompt 'q0' is in both"):
    merge_runs([str(whole), shard0], str(tmp_path / "a"))
  with pytest.raises(MergeError, match="named twice"):
    merge_runs([shard0, shard0], str(tmp_path / "b"))
  with pytest.raises(MergeError, match="holds a run's results.jsonl"):
    merge_runs([shard0], str(whole))
  # A shard of another config (another seed).
  other = search_config(model_dir, prompts, tmp_path / "other")
  other.prompts.shard = "1/2"
  other.search.seed = 1
  other.prompts.limit = 0
  scale.run_search(other)
  with pytest.raises(MergeError, match=r"different configs \(search.seed: 0 vs 1\)"):
    merge_runs([shard0, str(tmp_path / "other" / "shard-1-of-2")], str(tmp_path / "c"))
  assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
  # A shard missing is allowed, and said.
  summary = merge_runs([shard0], str(tmp_path / "d"))
  assert summary["missing_shards"] == [1] and summary["num_prompts"] == 3


def test_merge_refuses_shards_answered_by_other_weights(runs, tmp_path):
  """Two shards whose configs name one path, but whose records name other weights behind it (the
  folder was saved over between the shards' runs)."""
  import shutil

  _, _, sharded = runs
  copy = tmp_path / "sharded"
  shutil.copytree(sharded, copy)
  results = copy / "shard-1-of-2" / "results.jsonl"
  records = [json.loads(line) for line in results.read_text().splitlines()]
  for record in records:
    record["models"]["policy"]["fingerprint"] = "sha256:00000000000000000000"
  results.write_text("".join(json.dumps(r) + "\n" for r in records))
  with pytest.raises(
    MergeError,
    match=r"the policy model differs between .*shard-0-of-2 \(sha256:\w+\) "
    r"and .*shard-1-of-2 \(sha256:0+\)",
  ):
    merge_runs([str(copy)], str(tmp_path / "merged"))
  assert not (tmp_path / "merged").exists()
