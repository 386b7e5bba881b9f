"""The main job through its real entry point: results, resume, crash safety, bad input."""

import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax import scale
from helpsteer_jax.scaling.search import FeedbackEditSearch
from helpsteer_jax.testing.checkout import REPO, experiment_config
from helpsteer_jax.testing.search_runs import (
  EXPERIMENT,
  one_at_a_time_command,
  records_by_id,
  search_config,
  write_prompts,
)

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_results_summary_distillation_and_resume(model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["What is 2+2?", "Name a colour.", "Say hello."])
  out = tmp_path / "out"
  summary = scale.run_search(search_config(model_dir, prompts, out))
  assert summary["num_prompts"] == 3 and summary["token_multiple"] > 1
  t = summary["tokens"]
  # The default account counts the answers (drafts and edits); the generated one feedback too.
  assert summary["token_account"] == "responses"
  assert (t["drafts"] + t["edits"]) / t["greedy"] == pytest.approx(summary["token_multiple"])
  assert t["total"] / t["greedy"] == pytest.approx(summary["token_multiples"]["generated"])
  assert summary["mean_effective_feedbacks_per_draft"] is not None
  # The engine's own figures: slot use and tokens per stage (the policy plays every role).
  engine = json.loads((out / "summary.json").read_text())["engine"]["engines"]["policy"]
  assert 0 < engine["slot_use"] <= 1
  assert {"draft", "greedy", "feedback"} <= set(engine["stages"])  # edits only for kept feedback
  assert sum(s["tokens"] for s in engine["stages"].values()) == (
    summary["tokens"]["total"] + summary["tokens"]["greedy"]
  )
  lines = (out / "results.jsonl").read_text().splitlines()
  assert [json.loads(l)["id"] for l in lines] == ["q0", "q1", "q2"]
  distill = [json.loads(l) for l in (out / "distill.jsonl").read_text().splitlines()]
  assert distill[0]["messages"][-1]["role"] == "assistant"
  assert distill[0]["messages"][-1]["content"] == json.loads(lines[0])["best"]["text"]

  write_prompts(prompts, ["What is 2+2?", "Name a colour.", "Say hello.", "Count to three."])
  summary = scale.run_search(search_config(model_dir, prompts, out))
  new_lines = (out / "results.jsonl").read_text().splitlines()
  assert new_lines[:3] == lines and json.loads(new_lines[3])["id"] == "q3"
  assert summary["num_prompts"] == 4


def test_a_failure_mid_run_keeps_finished_prompts(model_dir, tmp_path, monkeypatch):
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["One?", "Two?", "Three?", "Four?"])
  out = tmp_path / "out"
  real_run = FeedbackEditSearch.run
  calls = {"n": 0}

  def failing_run(self, items, on_record=None, **kwargs):
    def record(rec):  # the device is lost after two prompts are complete
      if calls["n"] == 2:
        raise RuntimeError("device lost")
      calls["n"] += 1
      on_record(rec)

    return real_run(self, items, on_record=record, **kwargs)

  monkeypatch.setattr(FeedbackEditSearch, "run", failing_run)
  with pytest.raises(RuntimeError, match="2 finished prompts are kept"):
    scale.run_search(search_config(model_dir, prompts, out))
  kept = [json.loads(l)["id"] for l in (out / "results.jsonl").read_text().splitlines()]
  assert kept == ["q0", "q1"]
  monkeypatch.setattr(FeedbackEditSearch, "run", real_run)
  scale.run_search(search_config(model_dir, prompts, out))
  ids = [json.loads(l)["id"] for l in (out / "results.jsonl").read_text().splitlines()]
  assert ids == ["q0", "q1", "q2", "q3"]


def test_select_stored_as_a_causal_lm_chooses_in_nemotron_layouts(model_dir, tmp_path):
  """A causal-LM folder as the selector (`logit_index=0`: its tied embedding's row 0 is the head),
  the Feedback role in NVIDIA's layout, through the entry point."""
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["Name a colour."])
  config = search_config(model_dir, prompts, tmp_path / "out")
  config.feedback_model.prompt_format = "nemotron"
  config.selector.kind = "reward_model"
  config.selector.path = model_dir
  config.selector.logit_index = 0
  config.selector.prompt_format = "nemotron"
  summary = scale.run_search(config)
  (record,) = [json.loads(l) for l in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
  assert record["prompt_formats"] == {"feedback": "nemotron", "edit": "plain"}
  assert record["roles"]["selector"] == "reward_model" and record["best"]["score"] is not None
  assert summary["num_prompts"] == 1
  config.edit_model.prompt_format = "nemotron"
  with pytest.raises(ValueError, match="edit role: the input layout of NVIDIA's Llama-3.3-Nemotron-70B-Edit"):
    scale.run_search(config)


def test_bad_prompts_fail_before_any_work(model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"id": "ok", "prompt": "Hi"}) + "\n" + json.dumps({"id": "e", "prompt": "  "}) + "\n")
  with pytest.raises(ValueError, match=r"prompts.jsonl:2: empty prompt"):
    scale.run_search(search_config(model_dir, prompts, tmp_path / "o1"))
  write_prompts(prompts, ["word " * 5000])
  with pytest.raises(ValueError, match="prompt 'q0' has .* tokens"):
    scale.run_search(search_config(model_dir, prompts, tmp_path / "o2"))
  assert not (tmp_path / "o2" / "results.jsonl").exists()


@pytest.mark.entry
def test_unknown_config_key_is_rejected():
  result = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.scale", f"--config={EXPERIMENT}", "--config.search.num_draftz=3"],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert result.returncode != 0
  assert "num_draftz" in result.stderr


def test_experiment_configs_build():
  config = experiment_config("scaling/smollm2_self_feedback_edit.py")
  assert config.search.mode == "feedback_edit" and config.prompts.source == "arena_hard"
  with pytest.raises(AttributeError):
    config.search.num_draftz = 1  # locked: misspelled keys fail


def _load(name):
  import importlib.util

  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", "scaling", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_grid_and_ablation_configs_build_at_both_sizes():
  grid, ablations = _load("grid"), _load("ablations")
  best = grid.get_config()
  assert (best.search.num_drafts, best.search.num_feedbacks) == (8, 16)
  assert best.selector.kind == "reward_model" and best.policy.param_dtype == "bfloat16"
  for d in grid.DRAFTS:
    for f in grid.FEEDBACKS:
      for e in grid.EDITS:
        assert grid.get_config(f"drafts={d},feedbacks={f},edits={e}").search.num_edits == e
  with pytest.raises(ValueError, match="outside the paper's grid"):
    grid.get_config("drafts=3")
  small = grid.get_config("size=smollm2,drafts=2,feedbacks=2")
  assert small.policy.path == "" and small.selector.kind == "generative_judge"
  for variant in ablations.VARIANTS:
    for size in ("70b", "smollm2"):
      config = ablations.get_config(f"variant={variant},size={size}")
      assert config.output_dir.endswith(variant)
  assert ablations.get_config("variant=self_feedback_self_edit").edit_model.path == "policy"
  assert ablations.get_config("variant=best_of_n").search.mode == "best_of_n"
  with pytest.raises(ValueError, match="expected key=value"):
    grid.get_config("draft=2")


def test_70b_configs_send_nvidias_models_their_own_layouts():
  from helpsteer_jax.scaling.config import RELEASED_MODELS

  grid, ablations = _load("grid"), _load("ablations")
  best = grid.get_config()
  assert best.policy.path == "checkpoints/Llama-3.1-Nemotron-70B-Instruct-HF"
  assert (best.feedback_model.path, best.feedback_model.prompt_format) == (
    "checkpoints/Llama-3.3-Nemotron-70B-Feedback",
    "nemotron",
  )
  # The Edit model's layout is unpublished: it keeps the project's own.
  assert (best.edit_model.path, best.edit_model.prompt_format) == ("checkpoints/Llama-3.3-Nemotron-70B-Edit", "plain")
  assert (best.selector.path, best.selector.prompt_format, best.selector.logit_index) == (
    "checkpoints/Llama-3.3-Nemotron-70B-Select",
    "nemotron",
    0,
  )
  assert RELEASED_MODELS["select"] == "nvidia/Llama-3.3-Nemotron-70B-Select"
  # The paper's grid: 16 *effective* feedbacks per draft, 32 sampled at temperature 0.7.
  settings = scale.search_settings(best.search)
  assert (settings.num_feedbacks, settings.feedback_samples, settings.feedback.temperature) == (16, 32, 0.7)
  base = ablations.get_config("variant=greedy,policy=llama3.3_instruct")
  assert base.policy.path == "checkpoints/Llama-3.3-70B-Instruct" and base.search.mode == "greedy"
  assert (
    base.output_dir.endswith("llama3.3_instruct_main_arena_hard_greedy") and base.label == "llama3.3_instruct:greedy"
  )
  assert grid.get_config("policy=llama3.3_instruct").policy.path == "checkpoints/Llama-3.3-70B-Instruct"
  with pytest.raises(ValueError, match="policy='gpt'"):
    grid.get_config("policy=gpt")


@pytest.mark.entry
def test_a_prompts_tree_does_not_depend_on_batching_or_a_kill_and_resume(model_dir, tmp_path):
  import signal
  import time

  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["What is 2+2?", "Name a colour.", "Say hello."])
  together = tmp_path / "together"
  scale.run_search(search_config(model_dir, prompts, together))  # prompts_per_batch=2
  # The same prompts one at a time in a separate process, killed with SIGKILL once the first is
  # written, then resumed.
  alone = tmp_path / "alone"
  args = one_at_a_time_command(model_dir, prompts, alone)
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
  proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  results = alone / "results.jsonl"
  while proc.poll() is None and not (results.exists() and results.read_text().count("\n") >= 1):
    time.sleep(0.02)
  if proc.poll() is None:
    os.kill(proc.pid, signal.SIGKILL)
  _, err = proc.communicate()
  assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
  config = search_config(model_dir, prompts, alone)
  config.prompts_per_batch = 1
  config.prompts_in_flight = 1
  scale.run_search(config)
  a, b = records_by_id(together), records_by_id(alone)
  assert sorted(a) == sorted(b) == ["q0", "q1", "q2"]
  for key in a:
    assert a[key] == b[key]
