"""The checkpoint of best held-out loss: a tiny run whose held-out loss falls, then rises as it
memorises answers the held-out rows contradict, keeps that step's parameters as best besides the
latest N, and `export_from=best` exports exactly them."""

import json
import os
import pathlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.train.best_checkpoint import BestCheckpoint, check_settings

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN = {"red": "otter", "blue": "falcon", "green": "walrus", "yellow": "heron"}
HELD_OUT = {"red": "falcon", "blue": "walrus", "green": "heron", "yellow": "otter"}  # the same words, swapped


def write(path: pathlib.Path, answers: dict[str, str]) -> pathlib.Path:
  with open(path, "w") as f:
    for color, animal in answers.items():
      messages = [{"role": "user", "content": f"Code word for {color}?"}, {"role": "assistant", "content": animal}]
      f.write(json.dumps({"messages": messages}) + "\n")
  return path


def flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def read_state(folder: pathlib.Path) -> dict:
  return ocp.PyTreeCheckpointer().restore(str(folder / "state"))


@pytest.mark.entry
def test_best_checkpoint_is_the_step_of_lowest_held_out_loss(tmp_path, embedded_gguf_path):
  train, held = write(tmp_path / "train.jsonl", TRAIN), write(tmp_path / "held.jsonl", HELD_OUT)
  run, export = tmp_path / "run", tmp_path / "export"
  cmd = [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/chat_sft.py:tiny",
    f"--workdir={run}",
    f"--config.data.path={train}",
    "--config.data.seq_len=32",
    "--config.data.batch_size=4",
    "--config.data.packing=False",
    "--config.total_steps=20",
    "--config.optim.learning_rate=1e-2",
    "--config.optim.warmup_steps=0",
    "--config.optim.schedule=constant",
    "--config.eval_every=5",
    "--config.checkpoint_every=5",
    "--config.keep_checkpoints=4",
    "--config.eval_data.dataset=chat_messages",
    f"--config.eval_data.path={held}",
    "--config.eval_data.seq_len=32",
    "--config.eval_data.truncation=left",
    "--config.eval_data.batch_size=4",
    "--config.eval_data.packing=False",
    "--config.keep_best_by=loss",
    "--config.export_from=best",
    f"--config.export_dir={export}",
    "--config.progress=False",
    "--config.tensorboard=False",
  ]
  env = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  }
  out = run_entry(cmd, cwd=REPO, env=env, timeout=600)

  rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r["loss"] for r in rows if r["split"] == "eval"}
  print("held-out loss by step:", {k: round(v, 3) for k, v in evals.items()})
  best_step = min(evals, key=evals.get)
  # The run records its resolved config and ends with a summary naming what it kept.
  recorded = json.loads((run / "config.json").read_text())
  assert recorded["total_steps"] == 20 and recorded["eval_data"]["path"] == str(held)
  assert "training finished at step 20 of 20; 2,560 tokens this run" in out  # 20 x 4 rows x 32
  assert f"held-out loss: best {evals[best_step]:.4f} at step {best_step}, final {evals[20]:.4f} at step 20" in out
  assert f"best checkpoint: step {best_step} in {run / 'best_checkpoint'}" in out
  assert f"export (best weights): {export}" in out
  assert sorted(evals) == [5, 10, 15, 20]
  assert best_step < 20 and evals[20] > evals[best_step], "the held-out loss must rise after its minimum"

  kept = sorted(int(p.name) for p in (run / "best_checkpoint").iterdir() if p.name.isdigit())
  assert kept == [best_step]
  best = flat(read_state(run / "best_checkpoint" / str(best_step)))
  # The train checkpoint of the same step holds the same parameters, bit for bit.
  same_step = flat(read_state(run / "checkpoints" / str(best_step))["params"])
  final = flat(read_state(run / "checkpoints" / "20")["params"])
  assert best.keys() == same_step.keys()
  assert all(np.array_equal(best[k], same_step[k]) for k in best)
  assert any(not np.array_equal(best[k], final[k]) for k in best)

  import helpsteer_jax as hj
  from helpsteer_jax.train.checkpointing import to_nested_dict

  model, _ = hj.load_pretrained(str(export))
  exported = flat(to_nested_dict(nnx.state(model, nnx.Param)))
  assert exported.keys() == best.keys()
  for k in best:
    assert exported[k].dtype == best[k].dtype and np.array_equal(exported[k], best[k]), k


def test_best_by_accuracy_keeps_the_highest(tmp_path):
  best = BestCheckpoint(tmp_path, "accuracy", asynchronous=False)
  params = {"w": jax.numpy.arange(3.0)}
  assert best.offer(1, params, {"loss": 0.7, "accuracy": 0.6})
  assert not best.offer(2, params, {"loss": 0.5, "accuracy": 0.55})
  assert best.offer(3, params, {"loss": 0.6, "accuracy": 0.7})
  with pytest.raises(KeyError, match="keep_best_by='accuracy'"):
    best.offer(4, params, {"loss": 0.1})
  best.close()
  resumed = BestCheckpoint(tmp_path, "accuracy", asynchronous=False)  # a restarted run
  assert (resumed.step, resumed.value) == (3, 0.7)
  resumed.close()


def test_settings_are_checked():
  with pytest.raises(ValueError, match="keep_best_by='f1'"):
    check_settings("f1", "latest")
  with pytest.raises(ValueError, match="export_from='newest'"):
    check_settings("loss", "newest")
  with pytest.raises(ValueError, match="needs keep_best_by"):
    check_settings("", "best")
