"""launch/local.sh --processes=2: the local rehearsal of a cluster run. Two jax.distributed
processes of 4 fake CPU devices each, coordinator on 127.0.0.1, started by the launcher exactly as
a user would, run the tiny RLOO training and a tiny search to completion."""

import json
import os
import subprocess

from test_scale_entry import EXPERIMENT, _write_prompts, model_dir  # noqa: F401 (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args: str, timeout: float = 600) -> str:
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # the launcher sets the device count
  proc = subprocess.run(["bash", "launch/local.sh", "--processes=2", "--devices_per_process=4", *args],
                        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-8000:]
  return proc.stdout


def test_tiny_rloo_runs_to_completion_over_two_processes(tmp_path, bundled_data, embedded_gguf_path):
  out = _launch("train", "--config=experiments/edit_rloo.py:tiny", f"--workdir={tmp_path / 'rloo'}",
                "--config.total_steps=2", "--config.progress=False", "--config.tensorboard=False",
                "--config.mesh.shape=(2,2,2)")
  assert "[0] training finished at step 2 of 2" in out
  assert "[1] " in out  # the second process ran, its lines prefixed
  with open(tmp_path / "rloo" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2] and all("kl" in r for r in rows)


def test_tiny_search_runs_to_completion_over_two_processes(tmp_path, model_dir):
  prompts = tmp_path / "prompts.jsonl"
  _write_prompts(prompts, ["What is 2+2?", "Name a colour."])
  stages = [f"--config.search.{s}.max_new_tokens=5" for s in ("draft", "feedback", "edit")]
  _launch("scale", f"--config={EXPERIMENT}", f"--config.policy.path={model_dir}",
          "--config.prompts.source=jsonl", f"--config.prompts.path={prompts}", "--config.prompts.limit=0",
          "--config.mesh.shape=(1,1,-1)", f"--config.output_dir={tmp_path / 'search'}", *stages)
  with open(tmp_path / "search" / "results.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 2 and all(r["best"]["text"] and r["greedy"] for r in records)
  with open(tmp_path / "search" / "summary.json") as f:
    assert json.load(f)["num_prompts"] == 2


def test_a_failed_process_fails_the_launch(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(["bash", "launch/local.sh", "--processes=2", "train", "--config=experiments/chat_sft.py:tiny",
                         f"--workdir={tmp_path}", "--config.total_steps=-3"], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert proc.returncode != 0
  assert "[local] a process exited with code" in proc.stdout
